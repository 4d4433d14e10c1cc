"""A cancel that stops: in the middle of a slow step and during evaluation, by the CANCEL file or SIGTERM.

The job runs in its own process (the job runner's entry, ``app.jobs_entry``, running the train operation) with a forward hook that makes the chosen
phase slow, so a step or an evaluation takes far longer than the job's remaining work would if the cancel
waited for it. That the cancel did not wait is read from the log (the slow step or evaluation never reports a
loss), not from the wall clock; the time it took is printed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ragtune.jobs import get_job, read_log, start_job, wait_job
from training.config import defaults_for
from app.wiring import OPERATIONS
from training.jobs import KIND

from .conftest import FACTS

pytestmark = pytest.mark.timeout(300)

SLOW_JOB = '''
import os, sys, time
from pathlib import Path
import training.run as run

PHASE = os.environ["SLOW_PHASE"]  # "train" (forward), "backward" or "eval"
real_build = run.build_trainer


def slow_build(*args, **kwargs):
    trainer = real_build(*args, **kwargs)
    job_dir = Path(sys.argv[sys.argv.index("--job-dir") + 1])

    def sleep(*_):
        (job_dir / f"IN_{PHASE.upper()}").touch()
        time.sleep(0.3)

    def slow(module, _inputs):
        if PHASE != "backward" and module.training == (PHASE == "train"):
            sleep()

    def slow_gradient(module, _inputs, output):
        if PHASE == "backward" and module.training and getattr(output, "requires_grad", False):
            output.register_hook(sleep)

    for module in trainer.model.modules():
        if not list(module.children()):
            module.register_forward_pre_hook(slow)
            module.register_forward_hook(slow_gradient)
    return trainer


run.build_trainer = slow_build
from app.wiring import OPERATIONS  # noqa: E402 - the job runner's own entry, after the patch

OPERATIONS.main()
'''


def _rows_file(tmp_path: Path) -> Path:
    """20 rows, so the file's own 10% validation split is not empty and each epoch ends with an evaluation."""
    path = tmp_path / "rows.jsonl"
    rows = [(f"{q} ({n})", a) for n in range(4) for q, a in FACTS]
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n" for q, a in rows))
    return path


def _start_slow_job(workspace, tmp_path, phase: str, name: str):
    (tmp_path / "slow_training_job.py").write_text(SLOW_JOB)
    config = defaults_for("tiny-llama", "lora", dataset=str(_rows_file(tmp_path)), adapter_name=name,
                          num_threads=1, max_steps=8, save_steps=100)
    env = {"SLOW_PHASE": phase, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = ["--operation", KIND, "--workspace", str(workspace.root), "--config-json", config.to_json()]
    # The record as a job written before training was an operation keeps it (a flat config): resume reads it too.
    return start_job(workspace, KIND, "slow_training_job", args, config=config.to_dict(), env=env)


def _wait_for(path: Path, job, workspace, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        current = get_job(workspace, job.id)
        assert not current.finished, f"job ended before the slow phase: {current.status} {current.error}"
        assert time.time() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def _assert_stopped_and_resumable(workspace, job, requested_at: float):
    job = wait_job(workspace, job.id, timeout=60, poll=0.05)
    print(f"the job stopped {time.time() - requested_at:.1f} s after the cancel")
    assert job.status == "cancelled", job.error
    rows, _ = read_log(job.log_path)
    assert [r["status"] for r in rows if r.get("event") == "end"] == ["cancelled"]
    # Resume runs the ordinary recipe from the checkpoint the cancel left, to the end.
    resumed = wait_job(workspace, OPERATIONS.resume(workspace, job.id).id, timeout=180)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result["metrics"]["steps"] == 8
    return rows


@pytest.mark.parametrize("phase", ["train", "backward"])
def test_cancel_file_stops_a_job_in_the_middle_of_a_slow_step(workspace, tmp_path, phase):
    """Slow in the forward pass, or in the backward pass (where most of a step's time goes)."""
    job = _start_slow_job(workspace, tmp_path, phase, f"cancel-mid-{phase}")
    _wait_for(job.dir / f"IN_{phase.upper()}", job, workspace)
    time.sleep(1.0)  # well inside the first step, which takes about 10 s here
    requested = time.time()
    (job.dir / "CANCEL").touch()  # what `ragtune jobs cancel` and the UI write (they also send SIGTERM)
    rows = _assert_stopped_and_resumable(workspace, job, requested)
    assert not [r for r in rows if r.get("loss") is not None], "the slow first step should not have finished"


def test_sigterm_stops_a_job_during_evaluation_and_keeps_a_resumable_checkpoint(workspace, tmp_path):
    job = _start_slow_job(workspace, tmp_path, "eval", "sigterm-eval")
    _wait_for(job.dir / "IN_EVAL", job, workspace)
    requested = time.time()
    os.kill(job.pid, signal.SIGTERM)
    rows = _assert_stopped_and_resumable(workspace, job, requested)
    assert not [r for r in rows if r.get("eval_loss") is not None], "the slow evaluation should not have finished"
    saved = [r for r in rows if r.get("event") == "checkpoint"]
    assert saved and saved[0]["reason"] == "cancelled" and saved[0]["step"] >= 1
    begins = [r for r in read_log(job.log_path)[0] if r.get("event") == "train_begin"]
    assert begins[-1]["resumed_from_step"] == saved[0]["step"]  # the resume started where the cancel saved
