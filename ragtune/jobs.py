"""Background jobs: long work runs in its own process and reports through files.

Layout of a job folder (``<workspace>/jobs/<job_id>/``)::

    job.json      what was started (kind, argv, config, pid, times)   written by the parent
    log.jsonl     one JSON object per line (step, loss, progress...)  appended by the child
    status.json   final state: succeeded / failed / cancelled + error written by the child
    CANCEL        present when a cancel was requested
    output.log    the child's stdout and stderr

The child is started in its own session, so closing or restarting the app never kills it, and a
restarted app finds the job again from these files. A child that dies without writing
status.json (killed, out of memory, machine restart) is reported as ``stopped`` with its exit
code or the last lines it printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import threading
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, read_json
from .errors import JobError, RagtuneError
from .job_events import Ended, read_log  # noqa: F401 - read_log: its readers import it from here too


class JobStatus(StrEnum):
    """Where a job stands: the one list of job statuses and the one answer to "can it be resumed".

    A ``str`` (``JobStatus.FAILED == "failed"``), so status.json, job dicts and API bodies hold the same
    strings as before and old job folders load unchanged.
    """

    QUEUED = "queued"        # a Job not started yet (the dataclass default; a job folder never reads so)
    RUNNING = "running"      # its process is alive
    SUCCEEDED = "succeeded"  # written by the job: it finished its work
    FAILED = "failed"        # written by the job: an error ended it
    CANCELLED = "cancelled"  # written by the job: a cancel request (CANCEL file, SIGTERM, Ctrl-C) ended it
    STOPPED = "stopped"      # its process is gone without writing status.json (killed, out of memory, reboot)

    @property
    def finished(self) -> bool:
        """It will not change by itself any more."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def running(self) -> bool:
        """Not finished yet (queued or running): cancel applies, start and resume wait for it."""
        return not self.finished

    @property
    def resumable(self) -> bool:
        """Finished without succeeding: a resume under the same id picks up where it ended (every job keeps
        what it did: stored files, embedded vectors, answers, checkpoints). A failed job resumes too: its
        cause (a full disk, a dead server, a bad file) may be fixed since. A kind of job may still refuse
        (``ragtune.operations.Operation.resume_refusal``)."""
        return self in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.STOPPED)


_children: dict[int, subprocess.Popen] = {}  # jobs this process started, to reap their exit codes


@dataclass
class Job:
    id: str
    kind: str
    dir: Path
    status: JobStatus = JobStatus.QUEUED
    pid: int | None = None
    argv: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)

    def __post_init__(self):
        self.status = JobStatus(self.status)

    @property
    def log_path(self) -> Path:
        return self.dir / "log.jsonl"

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


def jobs_dir(ws) -> Path:
    return ws.path("jobs")


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` runs (a zombie does not; one this process started is asked directly)."""
    if not pid:
        return False
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def start_job(ws, kind: str, module: str, args: list[str], *, config: dict | None = None,
              job_id: str | None = None, env: dict | None = None) -> Job:
    """Run ``python -m module *args --job-dir DIR`` in the background and return at once.

    Passing an existing ``job_id`` restarts that job in the same folder (resume), keeping its log.
    """
    job_id = job_id or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = jobs_dir(ws) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CANCEL").unlink(missing_ok=True)
    (folder / "status.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", module, *args, "--job-dir", str(folder)]
    previous = read_json(folder / "job.json") or {}
    job = Job(id=job_id, kind=kind, dir=folder, status=JobStatus.RUNNING, argv=argv, config=config or {},
              created_at=previous.get("created_at", time.time()), started_at=time.time())
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(folder / "output.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env, start_new_session=True, cwd=os.getcwd())
    _children[proc.pid] = proc
    job.pid = proc.pid
    _write_job(job)
    return job


def write_job_here(ws, kind: str, module: str, args: list[str], *, config: dict | None = None) -> Job:
    """A job folder for work this process does itself (the CLI): same files, this process's pid.

    Listed, followed and cancelled like a started job; resumed in a new process with the same argv.
    """
    job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = jobs_dir(ws) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    job = Job(id=job_id, kind=kind, dir=folder, status=JobStatus.RUNNING, pid=os.getpid(), config=config or {},
              argv=[sys.executable, "-m", module, *args, "--job-dir", str(folder)], created_at=now, started_at=now)
    _write_job(job)
    return job


@contextmanager
def start_lock(ws, name: str, timeout: float = 60):
    """Makes check-then-start atomic across processes: two clicks, or a click and the CLI, never both start."""
    from filelock import FileLock

    folder = jobs_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{name}-start.lock"), timeout=timeout):
        yield


def _write_job(job: Job) -> None:
    d = job.to_dict()
    for key in ("status", "error", "ended_at", "result"):
        d.pop(key)
    atomic_write_json(job.dir / "job.json", d)


def get_job(ws, job_id: str) -> Job:
    folder = jobs_dir(ws) / job_id
    meta = read_json(folder / "job.json")
    if meta is None:
        raise JobError(f"No job '{job_id}' in workspace '{ws.name}'.")
    meta.pop("dir", None)
    job = Job(dir=folder, **{k: v for k, v in meta.items() if k in Job.__dataclass_fields__})
    final = read_json(folder / "status.json")
    if final:
        job.status, job.error = JobStatus(final["status"]), final.get("error")
        job.ended_at, job.result = final.get("ended_at"), final.get("result", {})
    elif pid_alive(job.pid):
        job.status = JobStatus.RUNNING
    else:
        job.status = JobStatus.STOPPED
        job.error = _why_stopped(job)
    return job


def _why_stopped(job: Job) -> str:
    proc = _children.get(job.pid or -1)
    code = proc.returncode if proc is not None else None
    tail = ""
    out = job.dir / "output.log"
    if out.exists():
        lines = [ln for ln in out.read_text(errors="replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-600:]
    if code is not None and code < 0:
        reason = f"the process was killed by signal {-code}"
    elif code is not None:
        reason = f"the process exited with code {code} without reporting a result"
    else:
        reason = "the process is gone (killed, out of memory, or the machine restarted)"
    return f"Job stopped: {reason}." + (f" Last output: {tail}" if tail else "") + " It can be resumed."


def list_jobs(ws, kind: str | None = None) -> list[Job]:
    folder = jobs_dir(ws)
    if not folder.exists():
        return []
    jobs = []
    for d in folder.iterdir():
        if (d / "job.json").exists():
            job = get_job(ws, d.name)
            if kind is None or job.kind == kind:
                jobs.append(job)
    return sorted(jobs, key=lambda j: j.created_at, reverse=True)


def cancel_job(ws, job_id: str) -> Job:
    """Ask a job to stop: the CANCEL file, and SIGTERM, which the job turns into the same clean stop
    (a training job checks before every layer, so it stops mid-step and during evaluation too)."""
    job = get_job(ws, job_id)
    if job.finished:
        return job
    (job.dir / "CANCEL").touch()
    if job.pid and pid_alive(job.pid):
        try:
            os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return job


def wait_job(ws, job_id: str, timeout: float = 3600, poll: float = 0.5) -> Job:
    deadline = time.time() + timeout
    while True:
        job = get_job(ws, job_id)
        if job.finished:
            return job
        if time.time() > deadline:
            raise JobError(f"Job {job_id} still running after {timeout:.0f} s.")
        time.sleep(poll)


# ------------------------------------------------------------------ child side

RESERVE_BYTES = 64 * 1024


def _write_reserve(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * RESERVE_BYTES)
        f.flush()
        os.fsync(f.fileno())


class JobCancelled(Exception):
    pass


class CancelWatcher:
    """Sees a cancel request for a job folder: the CANCEL file, or SIGTERM (which writes it)."""

    def __init__(self, job_dir: str | Path):
        self.dir = Path(job_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._terminated = False
        self._previous_handler = None
        if threading.current_thread() is threading.main_thread():  # elsewhere the CANCEL file alone tells
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, *_):
        # Only mark it: the work checks often (a training job before every layer) and stops at a point where
        # its checkpoint is whole; raising here could cut a checkpoint write in half.
        self._terminated = True
        (self.dir / "CANCEL").touch()

    @property
    def cancel_requested(self) -> bool:
        return self._terminated or (self.dir / "CANCEL").exists()

    def check_cancel(self) -> None:
        if self.cancel_requested:
            raise JobCancelled()

    def log(self, **row) -> None:
        """Only the reporting process logs; other processes of a job (e.g. GPU ranks) stay silent."""

    def emit(self, event) -> None:
        """Log a typed event (``ragtune.job_events``)."""
        self.log(**event.to_row())


class JobReporter(CancelWatcher):
    """Used inside the job process: append log rows, check for cancel, record the outcome.

    Use as a context manager; an exception becomes status 'failed' with a readable message,
    a cancel request becomes 'cancelled'.
    """

    def __init__(self, job_dir: str | Path):
        super().__init__(job_dir)
        self._log = open(self.dir / "log.jsonl", "a", encoding="utf-8")
        self.result: dict[str, Any] = {}
        # Room kept for the outcome: a job that fails because the disk filled up can still say so
        # (without it, status.json could not be written and the job read "the process is gone").
        self._reserve = self.dir / ".status-reserve"
        try:
            _write_reserve(self._reserve)
        except OSError:
            self._reserve.unlink(missing_ok=True)

    def log(self, **row) -> None:
        row.setdefault("time", time.time())
        self._log.write(json.dumps(row, default=str) + "\n")
        self._log.flush()

    def __enter__(self) -> "JobReporter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        status, error = JobStatus.SUCCEEDED, None
        if exc_type is not None:
            if issubclass(exc_type, (JobCancelled, KeyboardInterrupt)) or self.cancel_requested:
                status, error = JobStatus.CANCELLED, "Cancelled by the user."
            else:
                status = JobStatus.FAILED
                error = str(exc) if isinstance(exc, RagtuneError) else f"{exc_type.__name__}: {exc}"
                if not isinstance(exc, RagtuneError):  # a RagtuneError is its own sentence, said by the caller
                    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        outcome = {"status": status, "error": error, "ended_at": time.time(), "result": self.result}
        # The log's end row first: whoever sees status.json (wait_job) then finds the row in the log too.
        # Written after it before, a reader woke by status.json could read the log without it (a test
        # failed so under load).
        try:
            self.emit(Ended(status=status, error=error))
            self._log.close()
        except OSError:  # the log row is a copy of status.json: lost on a full disk, nothing else is
            pass
        try:
            atomic_write_json(self.dir / "status.json", outcome)
        except OSError:  # a full disk: the reserve makes room for the outcome
            self._reserve.unlink(missing_ok=True)
            atomic_write_json(self.dir / "status.json", outcome if len(json.dumps(outcome, default=str)) < RESERVE_BYTES
                              else {**outcome, "result": {}})
        self._reserve.unlink(missing_ok=True)
        if self._previous_handler is not None:  # work run inside the CLI: its process goes on
            signal.signal(signal.SIGTERM, self._previous_handler)
        return exc_type is not None and status == JobStatus.CANCELLED
