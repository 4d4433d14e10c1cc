"""An evaluation as a background job: its own process, progress in the log, the run in the workspace."""

import pytest

from ragtune.errors import BadInputError, JobError

from app.wiring import OPERATIONS
from evaluation.runner import load_run
from evaluation.service import EVAL, EvalConfig, EvalJobConfig, evaluation_progress
from ragtune.jobs import cancel_job, read_log, wait_job
from ragtune.operations import running


def start_evaluation(ws, config: EvalConfig, rows=None):
    return OPERATIONS.start(ws, EVAL, EvalJobConfig.of(config, rows=rows))


def test_eval_job_runs_in_background_and_stores_the_run(workspace, tiny_llm):
    rows = [{"question": "What is the K7 top speed?", "answer": "2.3 m/s"},
            {"question": "How long is the warranty?", "answer": "24 months"}]
    job = start_evaluation(workspace, EvalConfig(variants="base", model="tiny-llama", max_tokens=4), rows=rows)
    done = wait_job(workspace, job.id, timeout=300)
    assert done.status == "succeeded", (done.error, (job.dir / "output.log").read_text()[-2000:])
    assert done.result["run_id"] == job.id and done.result["computed"] == 2
    log, _ = read_log(done.log_path)
    steps = [r["step"] for r in log if "step" in r]
    assert steps[-1] == 2 and all(r["total_steps"] == 2 for r in log if "step" in r)
    progress = evaluation_progress(done)  # what the Evaluate screen shows
    assert (progress.done, progress.total, progress.questions, progress.skipped) == (2, 2, 2, 0)
    run = load_run(workspace, job.id)
    assert run.status == "succeeded" and len(run.results) == 2
    assert run.summary["recommendation"]["verdict"] == "neither"  # only the base model was evaluated


def _wait_for_answers(job, at_least: int, timeout: float = 120) -> int:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [r["step"] for r in read_log(job.log_path)[0] if "step" in r]
        if steps and steps[-1] >= at_least:
            return steps[-1]
        time.sleep(0.2)
    raise AssertionError((job.dir / "output.log").read_text()[-2000:])


def test_eval_job_cancel_then_resume_computes_only_the_missing_answers(workspace, tiny_llm):
    rows = [{"question": f"What is part {i} of the K7?", "answer": f"part {i}"} for i in range(40)]
    job = start_evaluation(workspace, EvalConfig(variants="base", model="tiny-llama", max_tokens=48), rows=rows)
    _wait_for_answers(job, 1)
    # a second evaluation is refused while this one runs: one rule, for the CLI's jobs and the UI
    with pytest.raises(JobError, match="already running"):
        start_evaluation(workspace, EvalConfig(variants="base", model="tiny-llama"), rows=rows)
    assert running(workspace, EVAL).id == job.id
    cancel_job(workspace, job.id)
    cancelled = wait_job(workspace, job.id, timeout=120)
    assert cancelled.status == "cancelled", cancelled.error
    answered = load_run(workspace, job.id)
    kept = len(answered.results)
    assert 1 <= kept < 40 and answered.status == "interrupted"

    OPERATIONS.resume(workspace, job.id)
    done = wait_job(workspace, job.id, timeout=300)
    assert done.status == "succeeded", (done.error, (job.dir / "output.log").read_text()[-2000:])
    assert done.result["run_id"] == job.id and done.result["engine"] == "embedded"
    assert done.result["computed"] + done.result["cached"] == 40 - kept
    assert len(load_run(workspace, job.id).results) == 40


def test_eval_config_refuses_bad_settings_in_one_sentence():
    for bad, message in ((EvalConfig(variants=""), "at least one variant"),
                         (EvalConfig(variants="base,turbo"), "Unknown variant"),
                         (EvalConfig(judge_url="http://127.0.0.1:1/v1"), "both --judge-url and --judge-model"),
                         (EvalConfig(max_tokens=0), "at least 1"),
                         (EvalConfig(url="http://127.0.0.1:1/v1"), "use it with --engine vllm")):
        with pytest.raises(BadInputError, match=message):
            bad.validate()


def test_eval_flags_come_from_the_config_and_round_trip():
    import argparse
    import dataclasses

    from ragtune.config_args import add_dataclass_arguments, dataclass_from_args

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, EvalConfig)
    config = EvalConfig(qa="sample", variants="base,ft:a1", limit=3, max_tokens=16, engine="vllm",
                        url="http://127.0.0.1:9/v1", k=2)
    argv = [a for f in dataclasses.fields(config) if getattr(config, f.name) is not None
            for a in (f"--{f.name.replace('_', '-')}", str(getattr(config, f.name)))]
    assert dataclass_from_args(EvalConfig, parser.parse_args(argv)) == config
    assert dataclass_from_args(EvalConfig, parser.parse_args([])) == EvalConfig()
    help_text = parser.format_help()
    assert all(f"--{f.name.replace('_', '-')}" in help_text for f in dataclasses.fields(EvalConfig))


def test_cli_eval_detached_is_the_same_job_and_jobs_show_follows_it(workspace, tiny_llm):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", *args, "-w", str(workspace.root)], cwd=repo,
                              capture_output=True, text=True, timeout=300)

    started = cli("eval", "--qa", "sample", "--variants", "base", "--limit", "2", "--model", "tiny-llama",
                  "--max-tokens", "4", "--detach", "--json")
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["id"]
    followed = cli("jobs", "show", job_id, "-f")
    assert followed.returncode == 0, followed.stderr
    assert f"done: evaluation {job_id} on the embedded engine, 2 answers generated" in followed.stdout
    assert load_run(workspace, job_id).status == "succeeded"
    again = cli("jobs", "show", job_id, "-f")  # the job has ended: following it still ends with its summary
    assert f"done: evaluation {job_id} on the embedded engine, 2 answers generated" in again.stdout
