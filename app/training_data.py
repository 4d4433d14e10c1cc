"""Training data for a fine-tune, made the same way by `ragtune synth` and the Build screen.

Generated from the workspace's documents (training.synth over retrieval's chunks: the app layer
joins the two areas) or imported from the user's file; either way a versioned dataset with
train / validation / test splits (``SynthConfig``'s fractions), so the test questions of an
uploaded file are kept aside for evaluation too.

``SYNTH`` is the operation both call (``ragtune.operations``): one ``SynthConfig``, validated
once, run by the CLI in its process or started as a job by the Build screen, with progress rows
(passages done / total), cancel, and a precise refusal to resume (a version is written whole at
the end, so a stopped synth left nothing to continue from). With ``then_train`` (the Build
screen's "Start fine-tune") the job starts the fine-tune on the new version when it is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from ragtune.adapters import adapter_path, validate_adapter_name
from ragtune.errors import BadInputError
from ragtune.job_events import JobWarning
from ragtune.models import DEFAULT_LLM
from ragtune.operations import Operation, refuse_if_running
from retrieval.documents import all_chunks
from serving.engine import SamplingOptions
from serving.factory import get_engine
from training.chat_data import describe_errors
from training.chat_teachers import ChatTeacher
from training.config import TrainConfig
from training.dataset_store import import_chat_file
from training.jobs import TRAIN
from training.synth import SynthConfig, synthesize

TEACHER_KEY_ENV = "RAGTUNE_TEACHER_API_KEY"


def workspace_chunks(ws) -> list:
    return all_chunks(ws)


def local_teacher(model: str | None):
    """The local engine behind the same chat-teacher path as an OpenAI-compatible server."""
    engine = get_engine("embedded", model=model or DEFAULT_LLM)

    def complete(messages):
        return engine.generate(messages, SamplingOptions(max_tokens=768, temperature=0.3)).text

    return ChatTeacher(complete, name=f"local:{model or DEFAULT_LLM}")


def dataset_from_documents(ws, config=None, progress=None, teacher=None):
    """A new dataset version of Q&A written from the workspace's documents."""
    chunks = workspace_chunks(ws)
    if not chunks:
        raise BadInputError(f"Workspace '{ws.name}' has no documents: ingest documents first "
                            f"(`ragtune ingest PATH -w {ws.name}`), then run `ragtune synth -w {ws.name}`.")
    config = (config or SynthConfig()).validate()
    if teacher is None and config.teacher == "local":
        teacher = local_teacher(config.teacher_model)
    return synthesize(ws, config, progress, chunks=chunks, teacher=teacher)


def dataset_from_file(ws, path, config=None):
    """A new dataset version from the user's chat JSONL / Q&A JSONL / CSV: (version, skipped lines)."""
    config = (config or SynthConfig()).validate()
    return import_chat_file(ws, path, validation_fraction=config.validation_fraction,
                            test_fraction=config.test_fraction, seed=config.seed)


def _prepare(ws, config: SynthConfig) -> SynthConfig:
    if config.from_file:
        if not Path(config.from_file).is_file():
            raise BadInputError(f"Training file not found: {config.from_file}.")
    elif not workspace_chunks(ws):
        raise BadInputError(f"Workspace '{ws.name}' has no documents: ingest documents first "
                            f"(`ragtune ingest PATH -w {ws.name}`), then run `ragtune synth -w {ws.name}`.")
    if config.then_train is not None:  # everything the fine-tune can check now, before minutes of writing
        train = TrainConfig.from_dict(config.then_train).validate()
        if train.adapter_name:
            validate_adapter_name(train.adapter_name)
            if adapter_path(ws, train.adapter_name).exists():
                raise BadInputError(f"An adapter named '{train.adapter_name}' already exists; choose another name "
                                    "or delete it first.")
        refuse_if_running(ws, TRAIN)
    return config


def _synth(ws, config: SynthConfig, job) -> dict:
    if config.teacher == "openai" and not config.teacher_api_key:
        config.teacher_api_key = os.environ.get("OPENAI_API_KEY")
    skipped = []
    if config.from_file:
        version, skipped = dataset_from_file(ws, config.from_file, config)
        if skipped:
            job.emit(JobWarning(message=f"skipped {len(skipped)} malformed rows: {describe_errors(skipped, limit=10)}"))
    else:
        version = dataset_from_documents(ws, config, job.progress)
    result = {"dataset": version.to_dict(), "skipped": len(skipped),
              "skipped_detail": describe_errors(skipped, limit=3) if skipped else ""}
    if config.then_train is not None:
        train = job.operations.start(ws, TRAIN, TrainConfig.from_dict({**config.then_train, "dataset": version.name}))
        result["train_job"] = train.id
    return result


SYNTH = Operation(kind="synth", config=SynthConfig, work=_synth, prepare=_prepare,
                  secrets={"teacher_api_key": TEACHER_KEY_ENV},
                  resume_refusal=("a dataset version is written whole when the questions are done, so a stopped synth "
                                  "left nothing to continue from; start it again with `ragtune synth` (the extractive "
                                  "teacher takes seconds)."))
