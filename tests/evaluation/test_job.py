"""An evaluation as a background job: its own process, progress in the log, the run in the workspace."""

from evaluation.job import start_eval_job
from evaluation.runner import load_run
from ragtune.jobs import read_log, wait_job


def test_eval_job_runs_in_background_and_stores_the_run(workspace, tiny_llm):
    rows = [{"question": "What is the K7 top speed?", "answer": "2.3 m/s"},
            {"question": "How long is the warranty?", "answer": "24 months"}]
    job = start_eval_job(workspace, rows=rows, variants="base", model="tiny-llama", max_tokens=4)
    done = wait_job(workspace, job.id, timeout=300)
    assert done.status == "succeeded", (done.error, (job.dir / "output.log").read_text()[-2000:])
    assert done.result["run_id"] == job.id and done.result["computed"] == 2
    log, _ = read_log(done.log_path)
    steps = [r["step"] for r in log if "step" in r]
    assert steps[-1] == 2 and all(r["total_steps"] == 2 for r in log if "step" in r)
    run = load_run(workspace, job.id)
    assert run.status == "succeeded" and len(run.results) == 2
    assert run.summary["recommendation"]["verdict"] == "neither"  # only the base model was evaluated
