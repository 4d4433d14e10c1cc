"""`ragtune synth`, `ragtune train`, `ragtune jobs`, `ragtune adapters` end to end (tiny model)."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from retrieval.ingest import ingest_paths

pytestmark = pytest.mark.timeout(300)


def test_synth_on_sample_documents_splits_by_chunk(workspace, sample_docs, capsys):
    ws = str(workspace.root)
    assert main(["synth", "-w", ws]) == 2
    assert "ingest documents first" in capsys.readouterr().err

    ingest_paths(workspace, [sample_docs])
    assert main(["synth", "-w", ws, "--json"]) == 0
    version = json.loads(capsys.readouterr().out)
    assert version["teacher"] == "extractive" and version["split_by"] == "chunk"
    chunks = {s: set(v) for s, v in version["split_chunks"].items()}
    assert chunks["train"] and chunks["validation"] and chunks["test"]
    assert not (chunks["train"] & chunks["test"] or chunks["train"] & chunks["validation"]
                or chunks["validation"] & chunks["test"])
    docs = {json.loads(line)["doc"] for line in open(f"{version['path']}/train.jsonl")}
    assert {"product_manual_k7.pdf", "travel_policy.docx", "security_policy.html"} <= docs
    test_rows = [json.loads(line) for line in open(f"{version['path']}/test.jsonl")]
    assert all(r["question"] and r["answer"] and r["doc"] and "page" in r for r in test_rows)
    assert any(r["page"] for r in test_rows + [json.loads(line) for line in open(f"{version['path']}/train.jsonl")])

    assert main(["datasets", "-w", ws]) == 0
    assert "v1" in capsys.readouterr().out


def test_train_jobs_adapters_commands(workspace, facts_file, capsys, tmp_path):
    ws = str(workspace.root)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n")
    assert main(["train", "-w", ws, "--model", "tiny-llama", "--dataset", str(bad)]) == 2
    assert "line 1: invalid JSON" in capsys.readouterr().err

    code = main(["train", "-w", ws, "--model", "tiny-llama", "--dataset", str(facts_file), "--name", "cli",
                 "--max-steps", "4", "--rank", "4", "--lr", "0.005", "--packing", "false", "--num-threads", "1",
                 "--bf16", "false"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "adapter 'cli'" in out.out and "done: LoRA, fp32;" in out.out and "bf16" not in out.out.split("done:")[1]
    # Before the first step: the precision (with why) and the plan, with the measured speed and the budget.
    assert "precision: fp32, 1 thread (set by the user: fp32, 1 thread, measured" in out.out
    assert "plan: 5 of 5 rows" in out.out and "tokens/s measured" in out.out and "(budget 20.0 min)" in out.out
    assert out.out.index("plan:") < out.out.index("done:")

    assert main(["adapters", "list", "-w", ws, "--json"]) == 0
    adapters = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in adapters] == ["cli"]
    assert adapters[0]["config"]["rank"] == 4 and adapters[0]["config"]["packing"] is False
    assert adapters[0]["metrics"]["steps"] == 4

    assert main(["jobs", "list", "-w", ws, "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded"
    assert main(["jobs", "show", jobs[0]["id"], "-w", ws]) == 0
    assert "step 4/4" in capsys.readouterr().out
    assert main(["jobs", "resume", jobs[0]["id"], "-w", ws]) == 2
    assert "already finished" in capsys.readouterr().err

    assert main(["adapters", "delete", "cli", "-w", ws]) == 0
    assert main(["adapters", "list", "-w", ws]) == 0
    assert "no adapters yet" in capsys.readouterr().out
