"""Training as an operation of the one job runner (``ragtune.operations``): ``TRAIN``.

Its job process runs ``training.run.train``, which appends one typed event per logged step to the job's
``log.jsonl`` (``ragtune.job_events``) and checkpoints into ``<job>/checkpoints``, so a cancelled or
crashed run resumes from its last checkpoint step. Start, resume and cancel are the runner's.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from dataclasses import replace

from ragtune.adapters import adapter_path, validate_adapter_name
from ragtune.errors import BadInputError
from ragtune.models import canonical_name
from ragtune.operations import Operation

from .config import TrainConfig
from .dataset_store import resolve_training_data

KIND = "train"


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


def _launcher(config: TrainConfig, entry: str, args: list[str]) -> tuple[str, list[str]]:
    if config.accelerate_config:
        # Same recipe, one process per GPU; rank 0 writes the log and registers the adapter.
        return "accelerate.commands.launch", ["--config_file", str(Path(config.accelerate_config).expanduser()),
                                              "-m", entry, *args]
    return entry, args


def _environment(config: TrainConfig) -> dict:
    return {"OMP_NUM_THREADS": str(config.num_threads)} if config.num_threads else {}


def _train(ws, config: TrainConfig, job) -> dict:
    from .run import train  # imports torch: only the training process pays for it

    return train(ws, config, job.reporter, job.job_dir)


# One fine-tune at a time per workspace: two would fight over the CPU/GPU and the adapter folder. A
# cancelled, failed or stopped one resumes in place from its last checkpoint (``<job>/checkpoints``).
TRAIN = Operation(kind=KIND, config=TrainConfig, work=_train, prepare=prepare, launcher=_launcher,
                  environment=_environment, legacy_config=lambda stored: stored, title="a fine-tune")
