"""Issue 2's promise: documents in, a cited answer out, with the real Gemma 270M and embedder, offline."""

import json
import os
import subprocess
import sys

import pytest


def ragtune(*args, env):
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_ingest_index_ask_cites_the_gold_document(tmp_path, sample_docs, sample_qa, gemma_llm):
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "RAGTUNE_WORKSPACE": "e2e"}
    ragtune("workspace", "create", "e2e", env=env)
    ragtune("ingest", str(sample_docs), env=env)
    ragtune("index", env=env)
    gold = [json.loads(line) for line in sample_qa.read_text().splitlines() if line.strip()]
    for row in (gold[0], next(r for r in gold if r["doc"].endswith(".pdf"))):
        result = json.loads(ragtune("ask", row["question"], "--variant", "rag", "--json", env=env))
        assert result["variant"] == "rag"
        assert result["answer"].strip()
        assert result["latency_s"] > 0
        cited = [c["doc"] for c in result["citations"]]
        assert row["doc"] in cited, (row, cited)
        if "page" in row:
            assert any(c["doc"] == row["doc"] and c["page"] == row["page"] for c in result["citations"])
