"""The training recipe, run as the ``train`` operation of the job runner (``training.jobs.TRAIN``).

One readable flow: load data -> load the base model (bf16 LoRA, 4-bit QLoRA, or full) -> trl's
SFTTrainer with packing -> a JSONL log row per step -> checkpoints for resume -> save the adapter
as a standard PEFT folder and register it. Also usable in-process with ``train(ws, config, reporter)``
and under ``accelerate launch`` (see docs/training.md).
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ragtune.adapters import AdapterInfo, adapter_path, register_adapter, validate_adapter_name
from ragtune.atomic import atomic_directory, atomic_write_json, read_json
from ragtune.errors import BadInputError
from ragtune.jobs import CancelWatcher, JobCancelled, JobReporter, read_log
from ragtune.job_events import (AdapterSaved, CheckpointSaved, JobEvent, JobWarning, Measuring, PlanMade,
                                PrecisionChosen, SequenceLength, SkippedRows, TrainingStarted)
from ragtune.models import SERVING_TEMPLATE, resolve_llm
from ragtune.workspace import Workspace

from .config import TrainConfig
from .dataset_store import TrainingData, resolve_training_data
from .plan import SAVE_S, TrainPlan, make_plan
from .precision import PROBE_SHARE, PrecisionChoice, choose_precision, probe_inputs
from .trainer import (bf16_preparation, build_trainer, fit_max_length, memory_mb, method_label, row_lengths,
                      trainable_model)

if TYPE_CHECKING:  # the callbacks import transformers: loaded by the build phase, named here for types only
    from .callbacks import CancelAtStepEnd

CHECKPOINTS = "checkpoints"
PLAN = "plan.json"


def _elapsed_so_far(job_dir: Path) -> float:
    rows, _ = read_log(job_dir / "log.jsonl")
    return max((r.get("elapsed_s") or 0.0 for r in rows if r.get("step") is not None), default=0.0)


def train(ws, config: TrainConfig, reporter: JobReporter | None = None, job_dir: Path | None = None) -> dict:
    """Run one training to the end (or to a cancel) and register the result. Returns the job result.

    Before training: measure precision and threads (CPU), make the plan (rows, epochs, steps, expected
    time within the time budget) and log both; a resumed job reuses its plan, so it trains the same rows."""
    import torch

    threads_before = torch.get_num_threads()
    try:
        return _train(ws, config, reporter, job_dir)
    finally:
        torch.set_num_threads(threads_before)  # in-process callers (tests, benches) keep their setting


def _train(ws: Workspace, config: TrainConfig, reporter: JobReporter | None, job_dir: Path | None) -> dict:
    job = _open_job(ws, config, reporter, job_dir)
    rows = _load_rows(job)  # data
    setup = _settle_plan(job, rows)  # plan
    trainer, cancel = _build(job, rows, setup)  # build
    metrics = _fit(job, trainer, cancel, setup.plan)  # fit
    return _finalize(job, trainer, rows, setup, metrics)  # finalize


@dataclass
class _Job:
    """What every phase of one run shares: the workspace, the config, the job's folder and reporter."""

    ws: Workspace
    config: TrainConfig
    name: str  # of the adapter
    dir: Path
    reporter: JobReporter | None
    started: float
    checkpoint: str | None  # the last checkpoint of an earlier run of this job: a resume
    on_gpu: bool
    device: str

    @property
    def output_dir(self) -> Path:
        return self.dir / CHECKPOINTS

    def emit(self, event: JobEvent) -> None:
        if self.reporter:
            self.reporter.emit(event)

    def check_cancel(self) -> None:
        if self.reporter:
            self.reporter.check_cancel()


@dataclass
class _Rows:
    """The data phase's outcome: the rows, the base model and tokenizer, and the rows' lengths in tokens."""

    data: TrainingData
    model_path: Path
    tokenizer: object
    lengths: list[int]
    val_lengths: list[int]
    max_length: int


@dataclass
class _Setup:
    """The plan phase's outcome: what is trained, at which precision, with the config the trainer runs."""

    plan: TrainPlan
    precision: PrecisionChoice
    run_config: TrainConfig

    @property
    def label(self) -> str:
        return method_label(self.run_config.method, self.precision.bf16)


def _open_job(ws: Workspace, config: TrainConfig, reporter: JobReporter | None, job_dir: Path | None) -> _Job:
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    started = time.time()
    config.validate()
    name = validate_adapter_name(config.adapter_name or f"adapter-{time.strftime('%Y%m%d-%H%M%S')}")
    job_dir = Path(job_dir or (reporter.dir if reporter else ws.path("jobs", f"train-{name}")))
    job_dir.mkdir(parents=True, exist_ok=True)
    output_dir = job_dir / CHECKPOINTS
    on_gpu = torch.cuda.is_available()
    return _Job(ws, config, name, job_dir, reporter, started,
                checkpoint=get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None, on_gpu=on_gpu,
                device=f"cuda x{torch.cuda.device_count()}" if on_gpu else "cpu")


def _load_rows(job: _Job) -> _Rows:
    """Phase "data": the training rows (the same ones as when this job started), the base model, and each
    row's length in tokens, which sets the sequence length."""
    from transformers import AutoTokenizer

    config = job.config
    data = resolve_training_data(job.ws, config.dataset, seed=config.seed)
    previous = read_json(job.dir / "data.json")
    if previous and previous["data_hash"] != data.data_hash:
        raise BadInputError(
            f"The training data changed since this job started (dataset {data.name}); start a new training job."
        )
    atomic_write_json(job.dir / "data.json", {"dataset": data.name, "data_hash": data.data_hash,
                                              "train_rows": len(data.train), "validation_rows": len(data.validation)})
    if data.skipped:
        job.emit(SkippedRows(count=len(data.skipped), lines=[list(e) for e in data.skipped[:50]]))
    model = resolve_llm(config.base_model, progress=False)
    job.check_cancel()
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    if not tokenizer.chat_template:
        raise BadInputError(f"{config.base_model} has no chat template, so chat rows cannot be formatted for it.")
    lengths, val_lengths = row_lengths(tokenizer, data.train), row_lengths(tokenizer, data.validation)
    max_length = config.max_length or fit_max_length(lengths + val_lengths)
    too_long = sum(n > max_length for n in lengths + val_lengths)
    job.emit(SequenceLength(max_length=max_length, auto=config.max_length is None,
                            longest_row=max(lengths + val_lengths, default=0), truncated_rows=too_long))
    if too_long:
        job.emit(JobWarning(message=f"{too_long} rows are longer than max_length={max_length} tokens and will be "
                                    "cut off; raise --max-length (or use auto) to keep them whole."))
    return _Rows(data, model.path, tokenizer, lengths, val_lengths, max_length)


def _settle_plan(job: _Job, rows: _Rows) -> _Setup:
    """Phase "plan": precision and threads (measured on CPU), then the rows, epochs and steps that fit the time
    budget. A resume reuses its plan: the same rows at the same precision, or its checkpoint's step count is
    wrong."""
    import torch

    saved = read_json(job.dir / PLAN) if job.checkpoint else None
    if saved:
        plan, precision = TrainPlan(**saved["plan"]), PrecisionChoice.from_dict(saved["precision"])
    else:
        precision, model_load_s = _measure_precision(job, rows)
        plan = _make_plan(job, rows, precision, model_load_s)
        atomic_write_json(job.dir / PLAN, {"plan": plan.to_dict(), "precision": precision.to_dict()})
    if precision.threads:
        torch.set_num_threads(precision.threads)
    job.emit(PrecisionChosen(bf16=precision.bf16, threads=precision.threads, label=precision.label,
                             tokens_per_s=precision.tokens_per_s, reason=precision.reason))
    job.emit(PlanMade(summary=plan.summary(), left_out=plan.left_out, extra={
        k: v for k, v in plan.to_dict().items() if k not in ("kept", "eval_kept", "left_out")}))
    job.check_cancel()
    run_config = replace(job.config, bf16=precision.bf16, num_threads=precision.threads, epochs=plan.epochs)
    return _Setup(plan, precision, run_config)


def _measure_precision(job: _Job, rows: _Rows) -> tuple[PrecisionChoice, float | None]:
    """The fastest precision and thread count, timed on a few steps of the model about to be trained (on a
    GPU: bf16 where supported, untimed), and the seconds loading that model took (None: not loaded)."""
    config = job.config
    if not job.on_gpu:
        job.emit(Measuring(message="timing a few training steps in fp32 and bf16 autocast to pick the fastest "
                                   "precision and thread count"))
    load_s: list[float] = []

    def fresh_model():
        t = time.time()
        trainable = trainable_model(rows.model_path, config)
        load_s.append(time.time() - t)
        if job.reporter:
            add_cancel_check(trainable, job.reporter)
        return trainable

    ids, labels = probe_inputs(rows.tokenizer, rows.data.train, rows.max_length, config.batch_size,
                               config.assistant_only_loss)
    budget_s = config.budget_seconds(job.on_gpu)
    precision = choose_precision(fresh_model, ids, labels=labels, bf16=config.bf16, threads=config.num_threads,
                                 steps=1, prepare_bf16=bf16_preparation(config), emit=job.emit,
                                 max_seconds=PROBE_SHARE * budget_s if budget_s else None)
    return precision, load_s[0] if load_s else None


def _make_plan(job: _Job, rows: _Rows, precision: PrecisionChoice, model_load_s: float | None) -> TrainPlan:
    config, data = job.config, rows.data
    # The trainer loads the model once more: as long as the probe took to load it (5 s when none was timed).
    setup_s = time.time() - job.started + (model_load_s if model_load_s is not None else 5.0)
    plan = make_plan(data.train_meta or [{} for _ in data.train], rows.lengths, rows.val_lengths,
                     epochs=config.epochs, max_length=rows.max_length, batch_size=config.batch_size,
                     grad_accum=config.grad_accum, tokens_per_s=precision.tokens_per_s,
                     budget_s=config.budget_seconds(job.on_gpu), setup_s=setup_s, probe_s=precision.probe_s,
                     eval_each_epoch=config.eval_each_epoch, seed=config.seed)
    if config.max_steps > 0 and plan.train_s is not None:
        plan.train_s = round(plan.train_s * config.max_steps / plan.steps, 1)
        plan.steps = config.max_steps
    return plan


def _build(job: _Job, rows: _Rows, setup: _Setup) -> tuple[object, CancelAtStepEnd]:
    """Phase "build": the trainer on the planned rows, with the job's callbacks and cancel checks; and the
    callback that says whether the run stopped for a cancel."""
    from .callbacks import make_callbacks  # subclasses transformers' TrainerCallback: loaded with the trainer

    config, plan, data = job.config, setup.plan, rows.data
    train_rows = [data.train[i] for i in plan.kept]
    val_rows = [data.validation[i] for i in plan.eval_kept]
    job.emit(TrainingStarted(
        method=config.method, method_label=setup.label, base_model=config.base_model, dataset=data.name,
        data_hash=data.data_hash, train_rows=len(train_rows), validation_rows=len(val_rows), device=job.device,
        resume_checkpoint=Path(job.checkpoint).name if job.checkpoint else None))
    budget_s = config.budget_seconds(job.on_gpu)
    deadline = None
    if budget_s and not job.checkpoint:  # a resumed job has already spent part of its budget elsewhere
        deadline = job.started + budget_s - SAVE_S - (plan.eval_s or 0.0) / max(1.0, plan.epochs)
    elapsed_before = _elapsed_so_far(job.dir) if job.checkpoint else 0.0
    callbacks = make_callbacks(job.reporter, config, elapsed_before, deadline)
    trainer = build_trainer(setup.run_config, rows.model_path, train_rows, val_rows, job.output_dir, callbacks,
                            rows.max_length)
    callbacks[0].accelerator = trainer.accelerator
    if job.reporter and trainer.accelerator.num_processes == 1:
        # Checked before every layer, in training and evaluation alike: a cancel stops mid-step within a
        # fraction of a second. With several ranks the step-end check stops all of them at the same step.
        add_cancel_check(trainer.model, job.reporter)
    job.check_cancel()
    return trainer, callbacks[0]


def _fit(job: _Job, trainer, cancel: CancelAtStepEnd, plan: TrainPlan) -> dict:
    """Phase "fit": train to the end (from the checkpoint on a resume) and measure the validation loss. A cancel
    saves a checkpoint first, so a resume loses nothing."""
    try:
        output = trainer.train(resume_from_checkpoint=job.checkpoint)
        if cancel.cancelled:
            raise JobCancelled()
        metrics = {"train_loss": output.training_loss, "steps": trainer.state.global_step,
                   "epochs": round(trainer.state.epoch or 0.0, 3),
                   "train_runtime_s": output.metrics.get("train_runtime"), "estimated_train_s": plan.train_s,
                   "tokens_seen": trainer.state.num_input_tokens_seen}
        if trainer.eval_dataset is not None:
            metrics["eval_loss"] = _final_eval_loss(trainer)
    except JobCancelled:
        checkpoint_on_cancel(trainer, job.output_dir, job.emit)
        raise
    except ValueError as exc:
        if "target module" in str(exc).lower() or "chat template" in str(exc).lower():
            raise BadInputError(str(exc)) from None
        raise
    return metrics


def _final_eval_loss(trainer) -> float:
    last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
        return last_eval["eval_loss"]  # the epoch-end evaluation already measured it
    return trainer.evaluate()["eval_loss"]


def _run_metrics(job: _Job, trainer, setup: _Setup, metrics: dict) -> dict:
    """The fit's metrics with what the verdict needs: losses, speed, memory, and how much of the corpus the
    fine-tune saw and what all of it would cost."""
    plan = setup.plan
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    logged, _ = read_log(job.dir / "log.jsonl")
    speeds = [r["tokens_per_s"] for r in logged if r.get("tokens_per_s") and r.get("event") is None]
    metrics["tokens_per_s"] = speeds[-1] if speeds else None
    metrics["peak_memory_mb"] = round(memory_mb()[1], 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metrics["cpu_time_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # this session; wall time varies with load
    metrics["precision"] = "bf16" if setup.precision.bf16 else "fp32"
    metrics["threads"] = setup.precision.threads
    metrics["rows_trained"], metrics["rows_left_out"] = plan.rows, plan.rows_total - plan.rows
    metrics["facts_trained"], metrics["facts_total"] = plan.facts, plan.facts_total
    metrics["tokens_per_epoch"], metrics["tokens_per_epoch_all"] = plan.tokens_per_epoch, plan.tokens_per_epoch_all
    metrics["epochs"] = plan.epochs
    return metrics


def _finalize(job: _Job, trainer, rows: _Rows, setup: _Setup, metrics: dict) -> dict:
    """Phase "finalize": the run's metrics, the adapter saved as a standard folder and registered, the
    checkpoints dropped (they were only for a resume), and the job's result."""
    config, data = job.config, rows.data
    metrics = _run_metrics(job, trainer, setup, metrics)
    folder = save_trained(job.ws, trainer, config, job.name, rows.model_path, job.dir / "final")
    if folder is None:  # not the main process of a multi-GPU run: rank 0 registers the adapter
        return {}
    info = register_adapter(job.ws, AdapterInfo(
        name=job.name, path=str(folder), base_model=config.base_model, method=config.method, dataset=data.name,
        data_hash=data.data_hash, metrics=metrics, config=setup.run_config.to_dict(), created_at=time.time()))
    job.emit(AdapterSaved(adapter=job.name, path=str(folder), wall_s=round(time.time() - job.started, 1)))
    shutil.rmtree(job.output_dir, ignore_errors=True)
    return {"adapter": info.name, "path": str(folder), "method": config.method, "method_label": setup.label,
            "precision": setup.precision.reason, "plan": setup.plan.summary(), "base_model": config.base_model,
            "dataset": data.name, "data_hash": data.data_hash, "metrics": metrics}


def add_cancel_check(model, watcher: CancelWatcher, every_s: float = 0.1) -> list:
    """Hooks that raise JobCancelled once a cancel is requested (looked at most every `every_s`): before each
    layer's forward, and as each layer's gradient arrives in the backward pass (the longer part of a step)."""
    import torch

    last = [0.0]

    def check(*_):
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            if watcher.cancel_requested:
                raise JobCancelled()

    def on_output(_module, _inputs, output):
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(check)  # an exception raised in the backward pass comes out of .backward()

    leaves = [m for m in model.modules() if not list(m.children())]
    return [m.register_forward_pre_hook(check) for m in leaves] + [m.register_forward_hook(on_output) for m in leaves]


def checkpoint_on_cancel(trainer, output_dir: Path, emit: Callable[[JobEvent], None]) -> None:
    """Save the state after the last finished step, so a resume loses nothing of the work done.
    A step cut short never reached the optimizer, so the weights and the step count agree."""
    from transformers.trainer_utils import get_last_checkpoint

    step = trainer.state.global_step
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if step <= 0 or (last and Path(last).name == f"checkpoint-{step}"):
        return
    try:
        trainer._save_checkpoint(trainer.model, trial=None)
        emit(CheckpointSaved(step=step, reason="cancelled"))
    except Exception as exc:  # noqa: BLE001  (the previous checkpoint still resumes)
        emit(JobWarning(message=f"no checkpoint at step {step} on cancel ({exc}); resume starts from "
                                f"{Path(last).name if last else 'the beginning'}"))


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def save_trained(ws, trainer, config: TrainConfig, name: str, base_path: Path, staging: Path) -> Path | None:
    """LoRA/QLoRA: a standard PEFT folder (adapter_config.json + adapter_model.safetensors), which is what
    vLLM and PeftModel.from_pretrained load. Full: a complete model folder with tokenizer.

    ``trainer.save_model`` gathers sharded weights under DeepSpeed ZeRO-3 / FSDP, so every rank calls it;
    then the main process alone copies the result into the workspace in one atomic rename.
    """
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return None
    folder = adapter_path(ws, name)
    with atomic_directory(folder) as tmp:
        tmp.chmod(0o755)  # servers may run as another user
        if config.method == "full":
            for item in staging.iterdir():
                if item.name not in ("training_args.bin", "README.md"):
                    shutil.copy(item, tmp / item.name)
            if (base_path / SERVING_TEMPLATE).exists():
                shutil.copy(base_path / SERVING_TEMPLATE, tmp / SERVING_TEMPLATE)
        else:
            # No tokenizer files here: vLLM would treat them as an adapter-specific tokenizer.
            missing = [f for f in ADAPTER_FILES if not (staging / f).exists()]
            if missing:
                raise RuntimeError(f"The trainer did not write {', '.join(missing)} for the adapter.")
            for f in ADAPTER_FILES:
                shutil.copy(staging / f, tmp / f)
            adapter_cfg = json.loads((tmp / "adapter_config.json").read_text())
            adapter_cfg["base_model_name_or_path"] = str(base_path)
            (tmp / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    shutil.rmtree(staging, ignore_errors=True)
    return folder
