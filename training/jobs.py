"""Training as a background job: start, resume, cancel.

The job process is ``python -m training.run``; it appends one JSON row per step to the job's
``log.jsonl`` (see ``ragtune.jobs``) and checkpoints into ``<job>/checkpoints`` so a cancelled or
crashed run resumes from its last checkpoint step.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from dataclasses import replace

from ragtune.adapters import adapter_path, validate_adapter_name
from ragtune.errors import BadInputError, JobError
from ragtune.jobs import Job, cancel_job, get_job, list_jobs, start_job, start_lock
from ragtune.models import canonical_name

from .config import TrainConfig
from .dataset_store import resolve_training_data

KIND = "train"
MODULE = "training.run"


def default_adapter_name(config: TrainConfig, dataset_name: str) -> str:
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", canonical_name(config.base_model).rsplit("/", 1)[-1]).strip("-.")
    data = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset_name.rsplit(".", 1)[0]).strip("-.")
    return f"{model}-{config.method}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"[:64].strip("-.")


def prepare(ws, config: TrainConfig) -> TrainConfig:
    """Check everything that can be checked before a process starts, so mistakes fail at once."""
    config.validate()
    data = resolve_training_data(ws, config.dataset, seed=config.seed)  # raises on bad files / no data
    name = config.adapter_name or default_adapter_name(config, data.name)
    validate_adapter_name(name)
    if adapter_path(ws, name).exists():
        raise BadInputError(f"An adapter named '{name}' already exists; choose another name or delete it first.")
    dataset = config.dataset if config.dataset else data.name
    return replace(config, adapter_name=name, dataset=dataset)


def _module_and_args(ws, config: TrainConfig) -> tuple[str, list[str]]:
    args = ["--workspace", str(ws.root), "--config-json", config.to_json()]
    if config.accelerate_config:
        # Same recipe, one process per GPU; rank 0 writes the log and registers the adapter.
        return "accelerate.commands.launch", ["--config_file", str(Path(config.accelerate_config).expanduser()),
                                              "-m", MODULE, *args]
    return MODULE, args


def _env(config: TrainConfig) -> dict:
    return {"OMP_NUM_THREADS": str(config.num_threads)} if config.num_threads else {}


def start_training(ws, config: TrainConfig) -> Job:
    """Start a training job in its own process; returns at once with the Job (tail ``job.log_path``).

    One fine-tune at a time per workspace: two would fight over the CPU/GPU and the adapter folder.
    The check and the start happen under one file lock, so of two concurrent starts (two clicks, a
    click and the CLI) exactly one wins and the other gets the "already running" sentence.
    """
    refuse_if_training(ws)  # before preparing the data: a clear answer at once
    config = prepare(ws, config)
    module, args = _module_and_args(ws, config)
    with start_lock(ws, KIND):
        refuse_if_training(ws)
        return start_job(ws, KIND, module, args, config=config.to_dict(), env=_env(config))


def running_training(ws) -> Job | None:
    return next((j for j in list_jobs(ws, kind=KIND) if not j.finished), None)


def refuse_if_training(ws) -> None:
    """The rule "one fine-tune at a time per workspace", in one sentence with the command that ends the other."""
    running = running_training(ws)
    if running is not None:
        raise JobError(f"A fine-tune is already running ({running.id}); cancel it with "
                       f"`ragtune jobs cancel {running.id} -w {ws.name}` or wait for it to finish.")


def resume_training(ws, job_id: str) -> Job:
    """Restart a cancelled, failed or stopped training job in place, from its last checkpoint."""
    job = get_job(ws, job_id)
    if job.kind != KIND:
        raise JobError(f"Job {job_id} is a '{job.kind}' job, not a training job.")
    if job.status.running:
        raise JobError(f"Job {job_id} is still running.")
    if not job.status.resumable:
        raise JobError(f"Job {job_id} already finished and saved adapter '{job.result.get('adapter')}'.")
    config = TrainConfig.from_dict(job.config)
    module, args = _module_and_args(ws, config)
    with start_lock(ws, KIND):
        refuse_if_training(ws)
        return start_job(ws, KIND, module, args, config=config.to_dict(), job_id=job_id, env=_env(config))


def cancel_training(ws, job_id: str) -> Job:
    """Ask the job to stop: within a fraction of a second, also mid-step or during evaluation; it saves
    a checkpoint of the last finished step first, so it can be resumed."""
    return cancel_job(ws, job_id)
