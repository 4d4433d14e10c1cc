import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from ragtune import jobs

REPO = Path(__file__).resolve().parents[2]

DEMO_JOB = textwrap.dedent('''
    import argparse, time
    from ragtune.jobs import JobReporter

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--job-dir", required=True)
    args = parser.parse_args()
    with JobReporter(args.job_dir) as rep:
        for step in range(1, args.steps + 1):
            rep.check_cancel()
            rep.log(step=step, loss=1.0 / step)
            if args.fail and step == 2:
                raise ValueError("bad row at line 7")
            time.sleep(0.2)
        rep.result = {"steps": args.steps}
''')


@pytest.fixture
def demo_module(tmp_path):
    (tmp_path / "demo_job.py").write_text(DEMO_JOB)
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}


def test_job_runs_logs_and_succeeds(workspace, demo_module):
    job = jobs.start_job(workspace, "demo", "demo_job", ["--steps", "3"], config={"a": 1}, env=demo_module)
    done = jobs.wait_job(workspace, job.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert done.result == {"steps": 3} and done.config == {"a": 1}
    rows, offset = jobs.read_log(done.log_path)
    assert [r["step"] for r in rows if "step" in r] == [1, 2, 3]
    assert rows[-1]["event"] == "end"
    assert jobs.read_log(done.log_path, offset) == ([], offset)  # tail: nothing new
    assert [j.id for j in jobs.list_jobs(workspace, kind="demo")] == [job.id]


def test_failure_is_reported_with_reason(workspace, demo_module):
    job = jobs.start_job(workspace, "demo", "demo_job", ["--steps", "5", "--fail"], env=demo_module)
    done = jobs.wait_job(workspace, job.id, timeout=60)
    assert done.status == "failed"
    assert "bad row at line 7" in done.error


def test_cancel(workspace, demo_module):
    job = jobs.start_job(workspace, "demo", "demo_job", ["--steps", "200"], env=demo_module)
    while not jobs.read_log(job.log_path)[0]:
        time.sleep(0.1)
    jobs.cancel_job(workspace, job.id)
    done = jobs.wait_job(workspace, job.id, timeout=60)
    assert done.status == "cancelled"
    steps = [r["step"] for r in jobs.read_log(done.log_path)[0] if "step" in r]
    assert len(steps) < 200


def test_killed_job_is_reported_stopped_and_can_restart(workspace, demo_module):
    job = jobs.start_job(workspace, "demo", "demo_job", ["--steps", "200"], env=demo_module)
    while not jobs.read_log(job.log_path)[0]:
        time.sleep(0.1)
    os.kill(job.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while jobs.get_job(workspace, job.id).status == "running" and time.time() < deadline:
        time.sleep(0.1)
    stopped = jobs.get_job(workspace, job.id)
    assert stopped.status == "stopped"
    assert "signal 9" in stopped.error and "resumed" in stopped.error
    # A fresh process (an app restart) sees the same state from the files alone.
    jobs._children.clear()
    assert jobs.get_job(workspace, job.id).status == "stopped"
    again = jobs.start_job(workspace, "demo", "demo_job", ["--steps", "2"], job_id=job.id, env=demo_module)
    assert jobs.wait_job(workspace, again.id, timeout=60).status == "succeeded"
    assert jobs.get_job(workspace, job.id).created_at == stopped.created_at


def test_read_log_skips_a_half_written_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2')
    rows, offset = jobs.read_log(log)
    assert rows == [{"step": 1}]
    with log.open("a") as f:
        f.write("}\n")
    assert jobs.read_log(log, offset)[0] == [{"step": 2}]


def test_job_status_is_one_type_whose_values_are_the_strings_on_disk():
    S = jobs.JobStatus
    assert [s.value for s in S] == ["queued", "running", "succeeded", "failed", "cancelled", "stopped"]
    assert [s for s in S if s.resumable] == [S.FAILED, S.CANCELLED, S.STOPPED]
    assert [s for s in S if s.finished] == [S.SUCCEEDED, S.FAILED, S.CANCELLED, S.STOPPED]
    assert [s for s in S if s.running] == [S.QUEUED, S.RUNNING]
    assert S.FAILED == "failed" and f"{S.CANCELLED}" == "cancelled" and f"{S.STOPPED:9s}|" == "stopped  |"
    assert json.dumps({"status": S.SUCCEEDED}) == '{"status": "succeeded"}'


def test_a_job_folder_written_before_the_type_loads_the_same(workspace):
    """job.json and status.json as older ragtune wrote them (plain strings) read as the same statuses."""
    folder = jobs.jobs_dir(workspace) / "index-20240101-000000-abcdef"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"id": folder.name, "kind": "index", "pid": None, "argv": [],
                                                 "config": {}, "created_at": 1.0, "started_at": 1.0}))
    (folder / "status.json").write_text(json.dumps({"status": "cancelled", "error": "Cancelled by the user.",
                                                    "ended_at": 2.0, "result": {}}))
    job = jobs.get_job(workspace, folder.name)
    assert job.status is jobs.JobStatus.CANCELLED and job.finished and job.status.resumable
    assert json.loads(json.dumps(job.to_dict(), default=str))["status"] == "cancelled"
    assert jobs.Job(id="x", kind="demo", dir=folder, status="running").status is jobs.JobStatus.RUNNING
