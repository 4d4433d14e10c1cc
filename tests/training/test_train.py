"""Training on the tiny model: it learns, it logs, it cancels and resumes, bad input fails clearly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ragtune.adapters import get_adapter, list_adapters
from ragtune.errors import BadInputError, JobError
from ragtune.job_events import TrainingStep, of_type, read_events
from app.wiring import OPERATIONS
from ragtune.jobs import JobReporter, cancel_job, get_job, read_log, wait_job
from training.config import defaults_for
from training.jobs import TRAIN
from training.run import train
from training.trainer import fit_max_length

from .conftest import FACTS

pytestmark = pytest.mark.timeout(300)


def _config(dataset, method="lora", **over):
    return defaults_for("tiny-llama", method, dataset=str(dataset), num_threads=1, **over)


def _wait_for_step(ws, job, step, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows, _ = read_log(job.log_path)
        done = [r["step"] for r in rows if r.get("loss") is not None]
        if done and done[-1] >= step:
            return done[-1]
        current = get_job(ws, job.id)
        assert not current.finished, current.error
        time.sleep(0.05)
    raise AssertionError(f"job did not reach step {step}")


def test_tiny_model_memorises_facts_and_saves_a_peft_adapter(workspace, tiny_llm, facts_file, greedy, tmp_path):
    questions = [q for q, _ in FACTS]
    before = greedy(tiny_llm, questions)
    with JobReporter(tmp_path / "job") as reporter:  # in-process: the job path is tested below
        result = train(workspace, _config(facts_file, adapter_name="facts"), reporter)
    assert result["adapter"] == "facts" and result["method"] == "lora" and "LoRA" in result["method_label"]

    folder = Path(result["path"])
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "ragtune.json"]
    adapter_cfg = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and set(adapter_cfg["target_modules"]) >= {"q_proj", "down_proj"}

    after = greedy(tiny_llm, questions, adapter=folder)
    assert after == [a for _, a in FACTS]
    assert before != after

    events, _ = read_events(tmp_path / "job" / "log.jsonl")
    steps = [e for e in of_type(events, TrainingStep) if e.loss is not None]
    assert steps[-1].loss < steps[0].loss / 10
    last = steps[-1]
    assert last.step == 20 and last.epoch > 0 and last.learning_rate is not None and last.eta_s == 0.0
    assert last.tokens_per_s > 0 and last.memory_mb > 0 and last.total_steps == 20 and last.elapsed_s > 0

    info = get_adapter(workspace, "facts")
    assert info.method == "lora" and info.base_model == "tiny-llama" and info.dataset == "facts.jsonl"
    assert info.data_hash == result["data_hash"] and info.metrics["last_loss"] < 0.1
    assert info.config["rank"] == 8
    assert json.loads((folder / "ragtune.json").read_text())["name"] == "facts"
    assert not (tmp_path / "job" / "checkpoints").exists()


def test_job_cancel_resume_crash_resume(workspace, facts_file):
    """One job's life: cancel -> resume from the cancel step; kill -9 -> resume from the last checkpoint."""
    config = _config(facts_file, adapter_name="resumed", max_steps=150, save_steps=40)
    job = OPERATIONS.start(workspace, TRAIN, config)
    _wait_for_step(workspace, job, 5)
    cancel_job(workspace, job.id)
    job = wait_job(workspace, job.id, timeout=60)
    assert job.status == "cancelled"
    cancel_step = max(int(p.name.split("-")[1]) for p in (job.dir / "checkpoints").glob("checkpoint-*"))
    assert 5 <= cancel_step < 40

    job = OPERATIONS.resume(workspace, job.id)
    _wait_for_step(workspace, job, 85)
    os.kill(job.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while get_job(workspace, job.id).status == "running" and time.time() < deadline:
        time.sleep(0.1)
    job = get_job(workspace, job.id)
    assert job.status == "stopped" and "resumed" in job.error
    crash_step = max(int(p.name.split("-")[1]) for p in (job.dir / "checkpoints").glob("checkpoint-*"))
    assert crash_step == 80
    # An adapter checkpoint holds what a resume reads, not a copy of the tokenizer.
    kept = {f.name for f in (job.dir / "checkpoints" / "checkpoint-80").iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= kept
    assert not kept & {"tokenizer.json", "tokenizer_config.json"}

    job = wait_job(workspace, OPERATIONS.resume(workspace, job.id).id, timeout=180)
    assert job.status == "succeeded", job.error
    rows, _ = read_log(job.log_path)
    begins = [i for i, r in enumerate(rows) if r.get("event") == "train_begin"]
    assert [rows[i].get("resumed_from_step") for i in begins] == [None, cancel_step, crash_step]
    for i, expected_first in zip(begins[1:], (cancel_step + 1, crash_step + 1)):
        first = next(r["step"] for r in rows[i:] if r.get("loss") is not None)
        assert first == expected_first
    assert job.result["metrics"]["steps"] == 150
    assert [a.name for a in list_adapters(workspace)] == ["resumed"]
    with pytest.raises(JobError, match="already finished"):
        OPERATIONS.resume(workspace, job.id)


def test_bad_training_files_fail_clearly_before_any_job(workspace, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "only a question"}]}\n{not json}\n')
    with pytest.raises(BadInputError, match=r"no usable training rows: line 1: the last message must be the "
                                            r"assistant's answer; line 2: invalid JSON"):
        OPERATIONS.start(workspace, TRAIN, _config(bad))
    with pytest.raises(BadInputError, match="does not exist"):
        OPERATIONS.start(workspace, TRAIN, _config(tmp_path / "missing.jsonl"))
    with pytest.raises(BadInputError, match="no training data yet"):
        OPERATIONS.start(workspace, TRAIN, defaults_for("tiny-llama"))
    with pytest.raises(BadInputError, match="Unknown training method"):
        OPERATIONS.start(workspace, TRAIN, _config(bad, method="dora"))
    assert not any(workspace.path("jobs").iterdir())


def test_partly_bad_file_trains_on_good_rows_and_logs_the_skipped_lines(workspace, tmp_path, facts_file):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(facts_file.read_text() + '{"question": "", "answer": "x"}\n')
    with JobReporter(tmp_path / "job") as reporter:
        train(workspace, _config(mixed, max_steps=2, adapter_name="mixed"), reporter)
    rows, _ = read_log(tmp_path / "job" / "log.jsonl")
    skipped = next(r for r in rows if r.get("event") == "skipped_rows")
    assert skipped["count"] == 1 and skipped["lines"][0][0] == 6


def test_wrong_target_modules_fail_with_a_reason(workspace, facts_file):
    with pytest.raises(BadInputError, match=r"None of the LoRA target modules \['c_attn'\].*q_proj"):
        train(workspace, _config(facts_file, target_modules=["c_attn"], max_steps=2, adapter_name="x"))


def test_duplicate_adapter_name_is_refused(workspace, facts_file):
    workspace.path("adapters", "dup").mkdir()
    with pytest.raises(BadInputError, match="already exists"):
        OPERATIONS.start(workspace, TRAIN, _config(facts_file, adapter_name="dup"))


def test_auto_sequence_length_holds_every_row_and_a_short_cap_is_reported(workspace, tmp_path, facts_file):
    long_row = {"question": "Tell me everything about the warehouse rules?", "answer": " ".join(["pallets"] * 150)}
    data = tmp_path / "long.jsonl"
    data.write_text(facts_file.read_text() + json.dumps(long_row) + "\n")
    with JobReporter(tmp_path / "auto") as reporter:
        train(workspace, _config(facts_file, max_steps=1, max_length=None, adapter_name="auto"), reporter)
    rows, _ = read_log(tmp_path / "auto" / "log.jsonl")
    chosen = next(r for r in rows if r.get("event") == "sequence_length")
    assert chosen["auto"] and chosen["max_length"] == 128 and chosen["truncated_rows"] == 0
    assert chosen["longest_row"] <= 128

    with JobReporter(tmp_path / "auto-long") as reporter:
        train(workspace, _config(data, max_steps=1, max_length=None, adapter_name="auto-long"), reporter)
    rows, _ = read_log(tmp_path / "auto-long" / "log.jsonl")
    chosen = next(r for r in rows if r.get("event") == "sequence_length")
    assert chosen["longest_row"] > 128 and chosen["max_length"] >= chosen["longest_row"]
    assert chosen["truncated_rows"] == 0

    with JobReporter(tmp_path / "capped") as reporter:
        train(workspace, _config(data, max_steps=1, max_length=64, adapter_name="capped"), reporter)
    rows, _ = read_log(tmp_path / "capped" / "log.jsonl")
    assert next(r for r in rows if r.get("event") == "sequence_length")["truncated_rows"] == 1
    warning = next(r for r in rows if r.get("event") == "warning")
    assert "1 rows are longer than max_length=64" in warning["message"]


def test_fit_max_length_picks_the_shortest_standard_length():
    assert fit_max_length([40, 61]) == 128
    assert fit_max_length([40, 136]) == 256
    assert fit_max_length([513]) == 1024
    assert fit_max_length([10_000]) == 2048
    assert fit_max_length([]) == 128
