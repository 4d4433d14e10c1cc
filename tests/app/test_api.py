"""The app's API through gradio_client, on `ragtune app --sample` (the README's command) with the tiny model:
the sample workspace is ready at start; then ingest, build the index, ask with citations, evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from .conftest import started_app

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample"


@pytest.fixture(scope="module")
def sample_app(tmp_path_factory):
    with started_app(tmp_path_factory.mktemp("sample-home"), workspace=None, sample=True) as app:
        yield app


@pytest.fixture(scope="module")
def client(sample_app):
    return Client(sample_app.url, verbose=False, download_files=False)


def test_sample_workspace_is_ready_at_start(sample_app, client):
    log = sample_app.log()
    assert "Index ready" in log and "product_manual_k7.pdf: added" in log  # progress shown in the terminal
    answer = client.predict("sample", "What is the maximum payload of the K7 Pallet Pilot?", "rag", "", 32,
                            api_name="/ask")
    assert answer["variant"] == "rag"
    assert any(c["doc"] == "product_manual_k7.pdf" for c in answer["citations"]), answer["citations"]
    assert all(c["text"] for c in answer["citations"])


def test_ask_without_an_index_is_a_plain_error(sample_app, client):
    from ragtune.workspace import Workspace

    Workspace.create("empty", root=sample_app.home / "workspaces")
    with pytest.raises(Exception) as info:
        client.predict("empty", "What is the payload?", "rag", api_name="/ask")
    message = str(info.value)
    assert "index" in message.lower()
    assert "Traceback" not in message


def test_ingest_index_ask_and_eval(client, tmp_path):
    new_doc = tmp_path / "canteen_rules.txt"
    new_doc.write_text("Lumora canteen rules.\n\nThe Kadeweg canteen serves the Friday soup at exactly 11:40, "
                       "and the soup of the week is always parsnip with smoked paprika.\n")
    files = [new_doc, SAMPLE / "faq.md", REPO / "datasets" / "bad_files" / "empty.txt"]
    results, docs, _ = client.predict("sample", [handle_file(str(p)) for p in files], api_name="/ingest")
    by_name = {row[0]: row for row in results["data"]}
    assert by_name["canteen_rules.txt"][1] == "added" and by_name["canteen_rules.txt"][2] > 0
    assert by_name["faq.md"][1] == "already there"
    assert by_name["empty.txt"][1] == "failed" and by_name["empty.txt"][3]  # with the reason
    assert "canteen_rules.txt" in {row[0] for row in docs["data"]}

    status = client.predict("sample", api_name="/build_index")
    assert "Index ready" in status and "changed since" not in status

    answer = client.predict("sample", "When does the Kadeweg canteen serve the Friday soup?", "rag", "", 32,
                            api_name="/ask")
    assert any(c["doc"] == "canteen_rules.txt" for c in answer["citations"]), answer["citations"]

    result = client.predict("sample", ["base", "rag"], 2, max_tokens=32, api_name="/eval")
    variants = result["summary"]["variants"]
    assert set(variants) == {"base", "rag"}
    assert variants["rag"]["answered"] == 2
    assert "hit_at_k" in variants["rag"]["metrics"]
    assert result["recommendation"]["text"]


def test_ingest_refuses_a_docx_bomb_without_inflating_it(sample_app, client, docx_bomb, rss_watch):
    # The review saw 15 minutes and 2.4 GB on a 472 KB DOCX bomb here; these are safety bounds.
    # The round trip of an upload through Gradio's queue (a duplicate: nothing parsed) is the baseline.
    bomb = docx_bomb
    client.predict("sample", [handle_file(str(SAMPLE / "faq.md"))], api_name="/ingest")
    with rss_watch(sample_app.proc.pid) as baseline:
        _, docs_before, _ = client.predict("sample", [handle_file(str(SAMPLE / "faq.md"))], api_name="/ingest")
    with rss_watch(sample_app.proc.pid) as watch:
        results, docs, _ = client.predict("sample", [handle_file(str(bomb))], api_name="/ingest")
    print(f"app bomb refusal: {watch.elapsed_s:.3f} s (a duplicate upload: {baseline.elapsed_s:.3f} s), "
          f"+{watch.extra_mb:.0f} MB peak RSS of the app")
    (row,) = results["data"]
    assert row[0] == "report.docx" and row[1] == "failed" and "archive bomb" in row[3], row
    assert docs["data"] == docs_before["data"]
    assert watch.extra_mb < 200  # how little is inflated: tests/retrieval/test_ingest_gate.py, in bytes
