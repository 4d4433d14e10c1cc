"""Long operations (ingest, index, synth, train, eval, next round) as jobs: one config dataclass, one code path.

An ``Operation`` names its job kind, its config dataclass (which validates itself) and the
function that does the work, ``work(ws, config, job) -> result dict``. An ``OperationRegistry``
holds every operation by kind and names the module whose ``main`` runs one in a job process;
the app layer assembles it (``app.wiring.OPERATIONS``, the composition root), so this module never
imports an operation's module by name: a job record keeps the operation's kind, and the job process
looks the kind up in the registry it was started from. The CLI runs an operation in its own process
(``run_here``); the app and ``--detach`` start it in a process of its own (``start``). Both write the same job folder
(``ragtune.jobs``): ``log.jsonl`` with typed events (``ragtune.job_events``: progress with its rate and
ETA, and each operation's own), ``status.json`` with the outcome. So ``ragtune jobs show -f/cancel/resume``, the screens and a page reload all
see either kind, and cancel is the same CANCEL file or SIGTERM.

Starting is atomic per kind (a file lock around check-then-start): one index build at a
time per workspace, whoever asks (ingest is the exception: two ingests of the same files are safe,
each file is stored once and the other run reports it as a duplicate). ``resume`` restarts a stopped job under the same id with the
same config when the work picks up where it stopped (the index keeps every embedded vector,
ingest skips stored files); otherwise it says why it does not resume.

Training (``training.jobs.TRAIN``) and evaluation (``evaluation.service.EVAL``) are operations too: each
still runs in a process of its own, a training one under ``accelerate launch`` where its config asks
(``Operation.launcher``), and its job id may be its own (an evaluation's is its run id).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable

from .errors import BadInputError, JobError
from .job_events import OperationStarted, ProgressMeter
from .jobs import (CancelWatcher, Job, JobCancelled, JobReporter, get_job, list_jobs, start_job, start_lock,
                   write_job_here)
from .workspace import Workspace


def _no_launcher(config, entry: str, args: list[str]) -> tuple[str, list[str]]:
    return entry, args


def _no_environment(config) -> dict:
    return {}


@dataclass(frozen=True)
class Operation:
    kind: str                                   # the job kind ("ingest", "index", "synth", "train", "eval", ...)
    config: type                                # dataclass with validate() -> self
    work: Callable[..., dict]                   # work(ws, config, job: JobContext) -> result
    prepare: Callable | None = None             # prepare(ws, config) -> config: checks needing the workspace
    exclusive: bool = True                      # False: several may run at once (ingest: stores are content-addressed)
    resume_refusal: str | None = None           # why a stopped job of this kind does not resume (None: it does)
    secrets: dict = dataclasses.field(default_factory=dict)  # config field -> environment variable, never on disk
    # How the job process starts: (module, args) for `python -m`; training wraps it in `accelerate launch`.
    launcher: Callable[..., tuple[str, list[str]]] = _no_launcher
    environment: Callable[..., dict] = _no_environment  # extra environment of the job process (OMP_NUM_THREADS)
    job_id: Callable[..., str | None] = lambda config: None  # the job's id where the work names it (an eval run)
    # The stored config of a job record written before this kind was an operation (its own job process).
    legacy_config: Callable[[dict], dict] | None = None
    title: str = ""  # what a person calls one ("a fine-tune"); default "a <kind> job"

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", f"a {self.kind} job")


class JobContext:
    """What the work sees: ``progress(done, total, label)`` (logs a row, honours cancel), ``emit`` (a typed event),
    ``check_cancel``, and ``operations``, the registry it runs from."""

    def __init__(self, reporter: CancelWatcher, echo: Callable[[int, int, str], None] | None = None,
                 operations: "OperationRegistry | None" = None):
        self.reporter = reporter
        self.operations = operations  # the registry this job runs from: work that starts another job uses it
        self.echo = echo
        self.meter = ProgressMeter()

    @property
    def job_dir(self):
        return self.reporter.dir

    def check_cancel(self) -> None:
        self.reporter.check_cancel()

    def emit(self, event) -> None:
        self.reporter.emit(event)

    def progress(self, done: int, total: int | None, label: str = "") -> None:
        self.reporter.check_cancel()
        self.reporter.emit(self.meter.reading(done, total, label))
        if self.echo:
            self.echo(done, total, label)


def _checked(ws, op: Operation, config):
    if not isinstance(config, op.config):
        raise BadInputError(f"{op.kind} takes a {op.config.__name__}, not {type(config).__name__}.")
    config = dataclasses.replace(config)  # the caller's config stays as it was
    config.validate()
    return op.prepare(ws, config) if op.prepare else config


def _stored(op: Operation, config) -> dict:
    data = dataclasses.asdict(config)
    for name in op.secrets:
        data[name] = None
    return data


def _secret_env(op: Operation, config) -> dict:
    return {env: str(getattr(config, name)) for name, env in op.secrets.items() if getattr(config, name, None)}


def refuse_if_running(ws, op: Operation) -> None:
    """The rule "one job of this kind at a time per workspace", in one sentence with the command that ends the other."""
    if not op.exclusive:
        return
    busy = running(ws, op)
    if busy is not None:
        raise JobError(f"{op.title[:1].upper()}{op.title[1:]} is already running in workspace '{ws.name}' ({busy.id}); "
                       f"wait for it or cancel it with `ragtune jobs cancel {busy.id} -w {ws.name}`.")


def running(ws, op: Operation) -> Job | None:
    """The unfinished job of this operation's kind, if any."""
    return next((j for j in list_jobs(ws, kind=op.kind) if not j.finished), None)


def _job_config(op: Operation, stored: dict) -> dict:
    return {"operation": op.kind, "config": stored}


def operation_kind(job: Job) -> str | None:
    """The kind of operation a job record runs, or None for a job no operation runs.

    A record keeps the kind (``{"operation": "index"}``); a record written before kept a ``"module:NAME"``
    path of the Operation (``"retrieval.service:INDEX"``), whose kind is the job's own, and a training or
    evaluation record from before they were operations kept no ``"operation"`` at all."""
    ref = (job.config or {}).get("operation")
    if not ref:
        return job.kind if job.kind in _OWN_PROCESS_KINDS else None
    return job.kind if ":" in ref else ref


_OWN_PROCESS_KINDS = ("train", "eval")  # their records kept no "operation" before they became operations


def _stored_config(op: Operation, job: Job) -> dict:
    config = job.config or {}
    if "operation" in config:
        return config["config"]
    if op.legacy_config is None:
        raise JobError(f"Job {job.id} was written by an older ragtune that this version cannot resume.")
    return op.legacy_config(config)


class OperationRegistry:
    """Every operation by kind, and the module whose ``main()`` runs one in a job process.

    Built once by the composition root (``app.wiring``), which also owns that module: the job process
    imports the registry there, so no layer below the app names a module of the app, or of any
    layer, for a job to load. Starting, resuming and running here go through it."""

    def __init__(self, operations, *, entry: str):
        self.by_kind: dict[str, Operation] = {}
        for op in operations:
            if op.kind in self.by_kind:
                raise ValueError(f"two operations of kind '{op.kind}'")
            self.by_kind[op.kind] = op
        self.entry = entry  # `python -m <entry> --operation KIND ...` runs a job: its main calls self.main

    def __contains__(self, op: Operation) -> bool:
        return self.by_kind.get(op.kind) is op

    def get(self, kind: str) -> Operation:
        try:
            return self.by_kind[kind]
        except KeyError:
            raise JobError(f"No operation of kind '{kind}' (known: {', '.join(sorted(self.by_kind))}).") from None

    def _registered(self, op: Operation) -> Operation:
        if op not in self:
            raise JobError(f"The {op.kind} operation is not in this registry, so its job process could not run it.")
        return op

    def _launch(self, ws, op: Operation, config, stored: dict, job_id: str | None = None) -> Job:
        """Start the job process of ``op`` under the kind's start lock (check-then-start is atomic)."""
        args = ["--operation", op.kind, "--workspace", str(ws.root), "--config-json", json.dumps(stored)]
        module, args = op.launcher(config, self.entry, args)
        with start_lock(ws, op.kind):
            refuse_if_running(ws, op)
            return start_job(ws, op.kind, module, args, config=_job_config(op, stored),
                             job_id=job_id or op.job_id(config), env={**op.environment(config), **_secret_env(op, config)})

    def start(self, ws, op: Operation, config) -> Job:
        """Validate, then run the operation in its own process; returns the Job at once (tail ``job.log_path``)."""
        op = self._registered(op)
        refuse_if_running(ws, op)  # before preparing (a training set is read whole): a clear answer at once
        config = _checked(ws, op, config)
        return self._launch(ws, op, config, _stored(op, config))

    def run_here(self, ws, op: Operation, config, *, echo: Callable[[int, int, str], None] | None = None) -> Job:
        """Validate and run the operation in this process, as a job others see (``ragtune jobs list``, the app).

        ``echo(done, total, label)`` hears each progress row (a terminal bar). Returns the finished Job:
        its ``status`` is succeeded, cancelled (``ragtune jobs cancel`` or Ctrl-C) or failed, with ``error``.
        """
        op = self._registered(op)
        config = _checked(ws, op, config)
        stored = _stored(op, config)
        args = ["--operation", op.kind, "--workspace", str(ws.root), "--config-json", json.dumps(stored)]
        with start_lock(ws, op.kind):
            refuse_if_running(ws, op)
            job = write_job_here(ws, op.kind, self.entry, args, config=_job_config(op, stored))
        self._run(ws, op, config, job.dir, echo)
        return get_job(ws, job.id)

    def _run(self, ws, op: Operation, config, job_dir, echo=None) -> None:
        with JobReporter(job_dir) as reporter:
            ctx = JobContext(reporter, echo, operations=self)
            reporter.emit(OperationStarted(operation=op.kind, config=_stored(op, config)))
            reporter.result = op.work(ws, config, ctx) or {}

    def _run_silently(self, ws, op: Operation, config, job_dir) -> None:
        """A process of a multi-process launch other than rank 0 (accelerate): the same work, no log, no status."""
        try:
            op.work(ws, config, JobContext(CancelWatcher(job_dir), operations=self))
        except JobCancelled:
            pass

    def refuses_resume(self, job: Job) -> str | None:
        """Why a job of this kind never resumes, whatever its status (synth: a dataset is written whole), or None."""
        kind = operation_kind(job)
        return self.get(kind).resume_refusal if kind else None

    def resume(self, ws, job_id: str) -> Job:
        """Restart a cancelled, stopped or failed job under the same id and config, in its own process.

        The work picks up where it stopped: ingest skips stored files, an index keeps its embedded vectors,
        training continues from its last checkpoint, an evaluation computes only its missing answers."""
        job = get_job(ws, job_id)
        kind = operation_kind(job)
        if not kind:
            raise JobError(f"Job {job_id} is a '{job.kind}' job, which this command does not resume.")
        op = self.get(kind)
        if not job.status.resumable:
            raise JobError(f"Job {job_id} is still running." if job.status.running else
                           f"Job {job_id} already finished" + (
                               f" and saved adapter '{job.result['adapter']}'." if (job.result or {}).get("adapter")
                               else "."))
        if op.resume_refusal:
            raise JobError(f"Job {job_id} ({op.kind}) {job.status}: {op.resume_refusal}")
        stored = _stored_config(op, job)
        config = self._config(op, stored)
        return self._launch(ws, op, config, stored, job_id=job_id)

    @staticmethod
    def _config(op: Operation, stored: dict):
        config = op.config(**stored)
        for name, env in op.secrets.items():
            setattr(config, name, os.environ.get(env))
        return config

    def main(self, argv: list[str] | None = None) -> None:
        """The job process: run the operation of ``--operation KIND`` (started by ``start`` or ``resume``)."""
        p = argparse.ArgumentParser(prog=f"python -m {self.entry}")
        p.add_argument("--operation", required=True, help="the operation's kind")
        p.add_argument("--workspace", required=True)
        p.add_argument("--config-json", required=True)
        p.add_argument("--job-dir", required=True)
        args = p.parse_args(argv)
        op = self.get(args.operation)
        config = self._config(op, json.loads(args.config_json))
        ws = Workspace.open(args.workspace)
        if int(os.environ.get("RANK", "0")) != 0:
            self._run_silently(ws, op, config, args.job_dir)
        else:
            self._run(ws, op, config, args.job_dir)


def latest(ws, op: Operation) -> Job | None:
    jobs = list_jobs(ws, kind=op.kind)
    return jobs[0] if jobs else None

