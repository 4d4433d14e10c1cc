"""The app's API through gradio_client: ingest, build the index, ask with citations, evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample"


@pytest.fixture(scope="module")
def client(running_app):
    return Client(running_app.url, verbose=False, download_files=False)


def test_ask_before_indexing_is_a_plain_error(client):
    with pytest.raises(Exception) as info:
        client.predict("flow", "What is the payload?", "rag", api_name="/ask")
    message = str(info.value)
    assert "index" in message.lower()
    assert "Traceback" not in message


def test_ingest_index_ask_and_eval(client):
    files = [SAMPLE / "product_manual_k7.pdf", SAMPLE / "faq.md", REPO / "datasets" / "bad_files" / "empty.txt"]
    results, docs, _ = client.predict("flow", [handle_file(str(p)) for p in files], api_name="/ingest")
    by_name = {row[0]: row for row in results["data"]}
    assert by_name["product_manual_k7.pdf"][1] == "added" and by_name["product_manual_k7.pdf"][2] > 0
    assert by_name["faq.md"][1] == "added"
    assert by_name["empty.txt"][1] == "failed" and by_name["empty.txt"][3]  # with the reason
    assert {row[0] for row in docs["data"]} == {"product_manual_k7.pdf", "faq.md"}

    status = client.predict("flow", api_name="/build_index")
    assert "Index ready" in status

    answer = client.predict("flow", "What is the maximum payload of the K7 Pallet Pilot?", "rag", "", 32,
                            api_name="/ask")
    assert answer["variant"] == "rag"
    assert answer["citations"], answer
    assert any(c["doc"] == "product_manual_k7.pdf" for c in answer["citations"])
    assert all(c["text"] for c in answer["citations"])

    result = client.predict("flow", ["base", "rag"], 2, max_tokens=32, api_name="/eval")
    variants = result["summary"]["variants"]
    assert set(variants) == {"base", "rag"}
    assert variants["rag"]["answered"] == 2
    assert "hit_at_k" in variants["rag"]["metrics"]
    assert result["recommendation"]["text"]

