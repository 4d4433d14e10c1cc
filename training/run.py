"""The training recipe, run as a job: ``python -m training.run --workspace DIR --config-json JSON --job-dir DIR``.

One readable flow: load data -> load the base model (bf16 LoRA, 4-bit QLoRA, or full) -> trl's
SFTTrainer with packing -> a JSONL log row per step -> checkpoints for resume -> save the adapter
as a standard PEFT folder and register it. Also usable in-process with ``train(ws, config, reporter)``
and under ``accelerate launch`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from ragtune.adapters import AdapterInfo, adapter_path, register_adapter, validate_adapter_name
from ragtune.atomic import atomic_directory, atomic_write_json, read_json
from ragtune.errors import BadInputError, RagtuneError
from ragtune.jobs import CancelWatcher, JobCancelled, JobReporter, read_log
from ragtune.models import SERVING_TEMPLATE, resolve_llm

from .config import TrainConfig
from .dataset_store import resolve_training_data

CHECKPOINTS = "checkpoints"
METHOD_LABELS = {
    "lora": "LoRA (bf16 mixed precision)",
    "qlora": "QLoRA (4-bit NF4 base via bitsandbytes, bf16 adapters)",
    "full": "full fine-tuning (every weight)",
}


def memory_mb() -> tuple[float, float]:
    """(current, peak) memory of this process in MiB: GPU memory when training on CUDA, else RSS."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        current = 0.0
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _use_bf16(config: TrainConfig) -> bool:
    import torch

    if config.bf16 is not None:
        return config.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast to bf16: about twice as fast as fp32 on recent x86


def load_base_model(model_path: Path, config: TrainConfig):
    """A fresh model object for training. Never run eval/generate on a 4-bit one before training:
    with bitsandbytes on CPU that silently stops gradients through its base weights."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": _local_device()}
    elif config.method == "lora" and torch.cuda.is_available() and _use_bf16(config):
        kwargs["dtype"] = torch.bfloat16  # frozen base in bf16 halves GPU memory
    else:
        kwargs["dtype"] = torch.float32  # CPU: fp32 weights, bf16 autocast in the trainer
    try:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except ImportError as exc:
        raise BadInputError(f"Cannot load the model for {config.method}: {exc}") from None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _local_device():
    import torch

    if torch.cuda.is_available():
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


def _lora_config(config: TrainConfig, model):
    from peft import LoraConfig

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if len(missing) == len(config.target_modules):
        raise BadInputError(
            f"None of the LoRA target modules {config.target_modules} exist in {config.base_model}; "
            f"linear layers there include: {', '.join(sorted(n for n in names if n.endswith('proj'))[:12])}."
        )
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=[m for m in config.target_modules if m in names],
                      bias="none", task_type="CAUSAL_LM")


def _make_callbacks(reporter: JobReporter | None, config: TrainConfig, elapsed_before: float):
    from transformers import TrainerCallback

    class JobLog(TrainerCallback):
        """Turns the trainer's logs into the job's JSONL rows, and the CANCEL file into a clean stop."""

        accelerator = None  # set once the trainer exists

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.tokens0 = state.num_input_tokens_seen
            self.step0 = state.global_step
            self.cancelled = False
            if reporter:
                reporter.log(event="train_begin", step=state.global_step, total_steps=state.max_steps,
                             resumed_from_step=state.global_step or None)

        def on_step_end(self, args, state, control, **kw):
            requested = bool(reporter and reporter.cancel_requested)
            if self.accelerator is not None and self.accelerator.num_processes > 1:
                import torch

                # Every rank must stop at the same step, or the others wait forever in a collective.
                flag = torch.tensor([float(requested)], device=self.accelerator.device)
                requested = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
            if requested:
                # Save where we are, then stop: a resume continues from this very step.
                self.cancelled = True
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if not reporter or not logs or not state.is_world_process_zero:
                return
            elapsed = time.time() - self.t0
            steps = state.global_step - self.step0
            current, peak = memory_mb()
            row = {
                "step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"),
                "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                "tokens_per_s": round((state.num_input_tokens_seen - self.tokens0) / elapsed, 1) if elapsed > 0 else None,
                "memory_mb": round(current, 1), "peak_memory_mb": round(peak, 1),
                "total_steps": state.max_steps, "elapsed_s": round(elapsed_before + elapsed, 1),
                "eta_s": round(elapsed / steps * (state.max_steps - state.global_step), 1) if steps > 0 else None,
            }
            if "train_loss" in logs:  # the trainer's summary at the very end
                row = {"event": "train_end", **row, **{k: logs[k] for k in ("train_loss", "train_runtime") if k in logs}}
            elif row["loss"] is None and row["eval_loss"] is None:
                return
            reporter.log(**row)

    class EarlyStop(TrainerCallback):
        def __init__(self, patience: int):
            self.patience, self.best, self.bad = patience, None, 0

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            if self.best is None or loss < self.best - 1e-4:
                self.best, self.bad = loss, 0
            else:
                self.bad += 1
                if self.bad >= self.patience:
                    control.should_training_stop = True
                    if reporter:
                        reporter.log(event="early_stop", step=state.global_step, best_eval_loss=self.best)

    callbacks = [JobLog()]
    if config.early_stopping_patience:
        callbacks.append(EarlyStop(config.early_stopping_patience))
    return callbacks


PACK_LENGTHS = (128, 256, 512, 1024, 2048)


def row_lengths(tokenizer, rows: list[dict]) -> list[int]:
    """Tokens of each chat row as the model sees it (chat template applied)."""
    return [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in rows]


def fit_max_length(lengths: list[int]) -> int:
    """The shortest standard sequence length that holds every row, so no answer is cut off; short
    packs mean more optimizer steps, which is what a small Q&A set needs to learn its facts."""
    longest = max(lengths, default=0)
    return next((n for n in PACK_LENGTHS if n >= longest), PACK_LENGTHS[-1])


def build_trainer(config: TrainConfig, model_path: Path, train_rows: list[dict], val_rows: list[dict],
                  output_dir: Path, callbacks=(), max_length: int | None = None):
    """The SFTTrainer for this config (also used by the benchmark)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if not tokenizer.chat_template:
        raise BadInputError(f"{config.base_model} has no chat template, so chat rows cannot be formatted for it.")
    model = load_base_model(model_path, config)
    peft_config = _lora_config(config, model) if config.method in ("lora", "qlora") else None
    has_eval = bool(val_rows) and config.eval_each_epoch
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the steps
        weight_decay=config.weight_decay,
        bf16=_use_bf16(config),
        use_cpu=not _has_cuda(),
        gradient_checkpointing=config.gradient_checkpointing,
        max_length=max_length or config.max_length or fit_max_length(row_lengths(tokenizer, train_rows + val_rows)),
        packing=config.packing,
        assistant_only_loss=config.assistant_only_loss,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=1,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,  # LoRA without checkpointing uses every adapter weight
        disable_tqdm=True,
        remove_unused_columns=True,
    )
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tokenizer, peft_config=peft_config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_eval else None,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the JSONL log instead
    return trainer


def _elapsed_so_far(job_dir: Path) -> float:
    rows, _ = read_log(job_dir / "log.jsonl")
    return max((r.get("elapsed_s") or 0.0 for r in rows if r.get("step") is not None), default=0.0)


def train(ws, config: TrainConfig, reporter: JobReporter | None = None, job_dir: Path | None = None) -> dict:
    """Run one training to the end (or to a cancel) and register the result. Returns the job result."""
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    config.validate()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    name = validate_adapter_name(config.adapter_name or f"adapter-{time.strftime('%Y%m%d-%H%M%S')}")
    job_dir = Path(job_dir or (reporter.dir if reporter else ws.path("jobs", f"train-{name}")))
    job_dir.mkdir(parents=True, exist_ok=True)
    log = reporter.log if reporter else (lambda **_: None)

    data = resolve_training_data(ws, config.dataset, seed=config.seed)
    previous = read_json(job_dir / "data.json")
    if previous and previous["data_hash"] != data.data_hash:
        raise BadInputError(
            f"The training data changed since this job started (dataset {data.name}); start a new training job."
        )
    atomic_write_json(job_dir / "data.json", {"dataset": data.name, "data_hash": data.data_hash,
                                              "train_rows": len(data.train), "validation_rows": len(data.validation)})
    if data.skipped:
        log(event="skipped_rows", count=len(data.skipped), lines=[list(e) for e in data.skipped[:50]])
    model = resolve_llm(config.base_model, progress=False)
    output_dir = job_dir / CHECKPOINTS
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    device = f"cuda x{torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    log(event="start", method=config.method, method_label=METHOD_LABELS[config.method], base_model=config.base_model,
        dataset=data.name, data_hash=data.data_hash, train_rows=len(data.train), validation_rows=len(data.validation),
        device=device, resume_checkpoint=Path(checkpoint).name if checkpoint else None)
    if reporter:
        reporter.check_cancel()

    from transformers import AutoTokenizer

    lengths = row_lengths(AutoTokenizer.from_pretrained(model.path), data.train + data.validation)
    max_length = config.max_length or fit_max_length(lengths)
    too_long = sum(n > max_length for n in lengths)
    log(event="sequence_length", max_length=max_length, auto=config.max_length is None,
        longest_row=max(lengths, default=0), truncated_rows=too_long)
    if too_long:
        log(event="warning", message=f"{too_long} rows are longer than max_length={max_length} tokens and will be "
                                     "cut off; raise --max-length (or use auto) to keep them whole.")
    callbacks = _make_callbacks(reporter, config, _elapsed_so_far(job_dir) if checkpoint else 0.0)
    trainer = build_trainer(config, model.path, data.train, data.validation, output_dir, callbacks, max_length)
    callbacks[0].accelerator = trainer.accelerator
    if reporter:
        reporter.check_cancel()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except ValueError as exc:
        if "target module" in str(exc).lower() or "chat template" in str(exc).lower():
            raise BadInputError(str(exc)) from None
        raise
    if callbacks[0].cancelled:
        raise JobCancelled()

    metrics = {"train_loss": output.training_loss, "steps": trainer.state.global_step,
               "epochs": round(trainer.state.epoch or 0.0, 3), "train_runtime_s": output.metrics.get("train_runtime"),
               "tokens_seen": trainer.state.num_input_tokens_seen}
    if trainer.eval_dataset is not None:
        last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
        if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
            metrics["eval_loss"] = last_eval["eval_loss"]  # the epoch-end evaluation already measured it
        else:
            metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    rows, _ = read_log(job_dir / "log.jsonl")
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") and r.get("event") is None]
    metrics["tokens_per_s"] = speeds[-1] if speeds else None
    metrics["peak_memory_mb"] = round(memory_mb()[1], 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metrics["cpu_time_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # this session; wall time varies with load

    folder = save_trained(ws, trainer, config, name, model.path, job_dir / "final")
    if folder is None:  # not the main process of a multi-GPU run: rank 0 registers the adapter
        return {}
    info = register_adapter(ws, AdapterInfo(
        name=name, path=str(folder), base_model=config.base_model, method=config.method, dataset=data.name,
        data_hash=data.data_hash, metrics=metrics, config=config.to_dict(), created_at=time.time()))
    log(event="saved", adapter=name, path=str(folder))
    shutil.rmtree(output_dir, ignore_errors=True)  # the adapter is saved; checkpoints were only for resume
    return {"adapter": info.name, "path": str(folder), "method": config.method,
            "method_label": METHOD_LABELS[config.method], "base_model": config.base_model,
            "dataset": data.name, "data_hash": data.data_hash, "metrics": metrics}


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


class RankReporter(CancelWatcher):
    """For ranks other than 0 of a multi-GPU run: sees the CANCEL file, logs nothing, writes no status."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one ragtune training job.")
    parser.add_argument("--workspace", required=True, help="workspace folder")
    parser.add_argument("--config-json", required=True, help="TrainConfig as JSON")
    parser.add_argument("--job-dir", required=True)
    args = parser.parse_args(argv)
    from ragtune.workspace import Workspace

    if int(os.environ.get("RANK", "0")) != 0:
        try:
            train(Workspace(Path(args.workspace)), _parse_config(args.config_json), RankReporter(args.job_dir))
        except JobCancelled:
            pass
        return 0
    with JobReporter(args.job_dir) as reporter:
        ws = Workspace(Path(args.workspace))
        reporter.result = train(ws, _parse_config(args.config_json), reporter)
    status = read_json(Path(args.job_dir) / "status.json") or {}
    return 0 if status.get("status") in ("succeeded", "cancelled") else 1


def _parse_config(text: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadInputError(f"Unreadable training configuration: {exc}") from None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RagtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
