"""The training recipe, run as a job: ``python -m training.run --workspace DIR --config-json JSON --job-dir DIR``.

One readable flow: load data -> load the base model (bf16 LoRA, 4-bit QLoRA, or full) -> trl's
SFTTrainer with packing -> a JSONL log row per step -> checkpoints for resume -> save the adapter
as a standard PEFT folder and register it. Also usable in-process with ``train(ws, config, reporter)``
and under ``accelerate launch`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ragtune.adapters import AdapterInfo, adapter_path, register_adapter, validate_adapter_name
from ragtune.atomic import atomic_directory, atomic_write_json, read_json
from ragtune.errors import BadInputError, RagtuneError
from ragtune.jobs import CancelWatcher, JobCancelled, JobReporter, JobStatus, read_log
from ragtune.models import SERVING_TEMPLATE, resolve_llm

from .config import TrainConfig
from .dataset_store import resolve_training_data
from .lm_head import add_compact_lm_head, adapter_inputs_stay_bf16, prepare_bf16_lora
from .lora_dropout import use_sixteen_bit_dropout
from .plan import SAVE_S, TrainPlan, make_plan
from .precision import PROBE_SHARE, choose_precision

CHECKPOINTS = "checkpoints"
PLAN = "plan.json"


def method_label(method: str, bf16: bool) -> str:
    """What ran, in words: the method and the precision the trainer used."""
    precision = "bf16 mixed precision" if bf16 else "fp32"
    if method == "qlora":
        return f"QLoRA (4-bit NF4 base via bitsandbytes, bf16 compute), {precision} adapters"
    if method == "full":
        return f"full fine-tuning (every weight), {precision}"
    return f"LoRA, {precision}"


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
    """The precision of a run whose config was not resolved by measurement (benches, direct callers):
    the set flag, else bf16 on a GPU that supports it and fp32 on CPU (the safe one; ``train`` measures)."""
    import torch

    if config.bf16 is not None:
        return config.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return False


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
    elif config.method == "lora" and _use_bf16(config):
        # The frozen base in bf16 halves memory and, on CPU, spares autocast from casting every weight to bf16
        # again on every step (they never change); the adapters stay fp32.
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
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


def _make_callbacks(reporter: JobReporter | None, config: TrainConfig, elapsed_before: float,
                    deadline: float | None = None, clock: Callable[[], float] = time.time):
    """`deadline` (a `clock()` reading, time.time by default): the last moment a training step may end so
    that the job, evaluation and saving included, stays within its time budget when the machine turns out
    slower than measured. `clock` is injected by tests."""
    from transformers import TrainerCallback

    class JobLog(TrainerCallback):
        """Turns the trainer's logs into the job's JSONL rows, and the CANCEL file into a clean stop."""

        accelerator = None  # set once the trainer exists

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = clock()
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
            elif deadline is not None and state.global_step < state.max_steps:
                steps = state.global_step - self.step0
                per_step = (clock() - self.t0) / steps if steps > 0 else 0.0
                if clock() + per_step > deadline:  # the next step would end past the budget
                    control.should_training_stop = True
                    if reporter:
                        reporter.log(event="budget_stop", step=state.global_step, total_steps=state.max_steps,
                                     message=f"stopped after {state.global_step} of {state.max_steps} steps to stay "
                                             "within the time budget: the machine ran slower than measured")

        def on_log(self, args, state, control, logs=None, **kw):
            if not reporter or not logs or not state.is_world_process_zero:
                return
            elapsed = clock() - self.t0
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
    trainer = _trainer_class()(
        model=model, args=args, processing_class=tokenizer, peft_config=peft_config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_eval else None,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the JSONL log instead
    if config.method == "lora" and args.bf16 and not _has_cuda():
        adapter_inputs_stay_bf16(trainer.model)
    if not _has_cuda():
        use_sixteen_bit_dropout(trainer.model)
    add_compact_lm_head(trainer.model)  # after trl's fused head, which it replaces on CPU
    return trainer


@functools.cache
def _trainer_class():
    """SFTTrainer without two costs of every step or checkpoint that buy nothing here."""
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def floating_point_ops(self, inputs) -> int:
            # transformers counts the model's parameters again on every step for the logged total_flos.
            if not hasattr(self, "_parameters_counted"):
                self._parameters_counted = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs["input_ids"].numel() * self._parameters_counted if "input_ids" in inputs else 0

        def _save(self, output_dir=None, state_dict=None) -> None:
            # An adapter checkpoint never needs the tokenizer (a resume and save_trained read the base
            # model's); Gemma 3's is 33 MB, written again into every checkpoint.
            if not hasattr(self.model, "peft_config"):
                return super()._save(output_dir, state_dict)
            tokenizer, self.processing_class = self.processing_class, None
            try:
                super()._save(output_dir, state_dict)
            finally:
                self.processing_class = tokenizer

    return Trainer


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


def _train(ws, config: TrainConfig, reporter: JobReporter | None, job_dir: Path | None) -> dict:
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    started = time.time()
    config.validate()
    name = validate_adapter_name(config.adapter_name or f"adapter-{time.strftime('%Y%m%d-%H%M%S')}")
    job_dir = Path(job_dir or (reporter.dir if reporter else ws.path("jobs", f"train-{name}")))
    job_dir.mkdir(parents=True, exist_ok=True)
    log = reporter.log if reporter else (lambda **_: None)
    check_cancel = reporter.check_cancel if reporter else (lambda: None)

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
    on_gpu = torch.cuda.is_available()
    device = f"cuda x{torch.cuda.device_count()}" if on_gpu else "cpu"
    check_cancel()

    tokenizer = AutoTokenizer.from_pretrained(model.path)
    if not tokenizer.chat_template:
        raise BadInputError(f"{config.base_model} has no chat template, so chat rows cannot be formatted for it.")
    lengths = row_lengths(tokenizer, data.train)
    val_lengths = row_lengths(tokenizer, data.validation)
    max_length = config.max_length or fit_max_length(lengths + val_lengths)
    too_long = sum(n > max_length for n in lengths + val_lengths)
    log(event="sequence_length", max_length=max_length, auto=config.max_length is None,
        longest_row=max(lengths + val_lengths, default=0), truncated_rows=too_long)
    if too_long:
        log(event="warning", message=f"{too_long} rows are longer than max_length={max_length} tokens and will be "
                                     "cut off; raise --max-length (or use auto) to keep them whole.")

    saved = read_json(job_dir / PLAN) if checkpoint else None
    if saved:  # a resume trains the same rows at the same precision, or its checkpoint's step count is wrong
        plan, choice = TrainPlan(**saved["plan"]), saved["precision"]
    else:
        if not on_gpu:
            log(event="measuring", message="timing a few training steps in fp32 and bf16 autocast to pick the "
                                           "fastest precision and thread count")
        load_s: list[float] = []

        def fresh_model():
            t = time.time()
            trainable = trainable_model(model.path, config)
            load_s.append(time.time() - t)
            if reporter:
                add_cancel_check(trainable, reporter)
            return trainable

        ids, labels = probe_inputs(tokenizer, data.train, max_length, config.batch_size,
                                   config.assistant_only_loss)
        budget_s = config.budget_seconds(on_gpu)
        precision = choose_precision(fresh_model, ids, labels=labels, bf16=config.bf16, threads=config.num_threads,
                                     steps=1, prepare_bf16=bf16_preparation(config), log=log,
                                     max_seconds=PROBE_SHARE * budget_s if budget_s else None)
        choice = precision.to_dict()
        setup_s = time.time() - started + (load_s[0] if load_s else 5.0)  # the trainer loads the model once more
        plan = make_plan(data.train_meta or [{} for _ in data.train], lengths, val_lengths, epochs=config.epochs,
                         max_length=max_length, batch_size=config.batch_size, grad_accum=config.grad_accum,
                         tokens_per_s=precision.tokens_per_s, budget_s=budget_s,
                         setup_s=setup_s, probe_s=precision.probe_s, eval_each_epoch=config.eval_each_epoch, seed=config.seed)
        if config.max_steps > 0 and plan.train_s is not None:
            plan.train_s = round(plan.train_s * config.max_steps / plan.steps, 1)
            plan.steps = config.max_steps
        atomic_write_json(job_dir / PLAN, {"plan": plan.to_dict(), "precision": choice})
    use_bf16, threads = bool(choice["bf16"]), choice.get("threads")
    if threads:
        torch.set_num_threads(threads)
    label = method_label(config.method, use_bf16)
    log(event="precision", bf16=use_bf16, threads=threads, label="bf16 mixed precision" if use_bf16 else "fp32",
        tokens_per_s=choice.get("tokens_per_s"), reason=choice.get("reason"))
    log(event="plan", summary=plan.summary(), **{k: v for k, v in plan.to_dict().items() if k not in ("kept", "eval_kept")})
    check_cancel()

    run_config = replace(config, bf16=use_bf16, num_threads=threads, epochs=plan.epochs)
    train_rows = [data.train[i] for i in plan.kept]
    val_rows = [data.validation[i] for i in plan.eval_kept]
    log(event="start", method=config.method, method_label=label, base_model=config.base_model,
        dataset=data.name, data_hash=data.data_hash, train_rows=len(train_rows), validation_rows=len(val_rows),
        device=device, resume_checkpoint=Path(checkpoint).name if checkpoint else None)
    budget_s = config.budget_seconds(on_gpu)
    deadline = None
    if budget_s and not checkpoint:  # a resumed job has already spent part of its budget elsewhere
        deadline = started + budget_s - SAVE_S - (plan.eval_s or 0.0) / max(1.0, plan.epochs)
    callbacks = _make_callbacks(reporter, config, _elapsed_so_far(job_dir) if checkpoint else 0.0, deadline)
    trainer = build_trainer(run_config, model.path, train_rows, val_rows, output_dir, callbacks, max_length)
    callbacks[0].accelerator = trainer.accelerator
    if reporter and trainer.accelerator.num_processes == 1:
        # Checked before every layer, in training and evaluation alike: a cancel stops mid-step within a
        # fraction of a second. With several ranks the step-end check stops all of them at the same step.
        add_cancel_check(trainer.model, reporter)
    check_cancel()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
        if callbacks[0].cancelled:
            raise JobCancelled()
        metrics = {"train_loss": output.training_loss, "steps": trainer.state.global_step,
                   "epochs": round(trainer.state.epoch or 0.0, 3),
                   "train_runtime_s": output.metrics.get("train_runtime"), "estimated_train_s": plan.train_s,
                   "tokens_seen": trainer.state.num_input_tokens_seen}
        if trainer.eval_dataset is not None:
            last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
            if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
                metrics["eval_loss"] = last_eval["eval_loss"]  # the epoch-end evaluation already measured it
            else:
                metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    except JobCancelled:
        checkpoint_on_cancel(trainer, output_dir, log)
        raise
    except ValueError as exc:
        if "target module" in str(exc).lower() or "chat template" in str(exc).lower():
            raise BadInputError(str(exc)) from None
        raise
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    rows, _ = read_log(job_dir / "log.jsonl")
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") and r.get("event") is None]
    metrics["tokens_per_s"] = speeds[-1] if speeds else None
    metrics["peak_memory_mb"] = round(memory_mb()[1], 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metrics["cpu_time_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # this session; wall time varies with load
    metrics["precision"] = "bf16" if use_bf16 else "fp32"
    metrics["threads"] = threads
    metrics["rows_trained"], metrics["rows_left_out"] = plan.rows, plan.rows_total - plan.rows
    # What the verdict needs to say how much of the corpus the fine-tune saw, and what all of it would cost.
    metrics["facts_trained"], metrics["facts_total"] = plan.facts, plan.facts_total
    metrics["tokens_per_epoch"], metrics["tokens_per_epoch_all"] = plan.tokens_per_epoch, plan.tokens_per_epoch_all
    metrics["epochs"] = plan.epochs

    folder = save_trained(ws, trainer, config, name, model.path, job_dir / "final")
    if folder is None:  # not the main process of a multi-GPU run: rank 0 registers the adapter
        return {}
    info = register_adapter(ws, AdapterInfo(
        name=name, path=str(folder), base_model=config.base_model, method=config.method, dataset=data.name,
        data_hash=data.data_hash, metrics=metrics, config=run_config.to_dict(), created_at=time.time()))
    log(event="saved", adapter=name, path=str(folder), wall_s=round(time.time() - started, 1))
    shutil.rmtree(output_dir, ignore_errors=True)  # the adapter is saved; checkpoints were only for resume
    return {"adapter": info.name, "path": str(folder), "method": config.method, "method_label": label,
            "precision": choice.get("reason"), "plan": plan.summary(), "base_model": config.base_model,
            "dataset": data.name, "data_hash": data.data_hash, "metrics": metrics}


def trainable_model(model_path: Path, config: TrainConfig):
    """The model as training sees it (LoRA applied for lora/qlora, the trainer's LM head): what the precision
    probe times."""
    model = load_base_model(model_path, config)
    if config.method in ("lora", "qlora"):
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(config, model))
        if not _has_cuda():
            use_sixteen_bit_dropout(model)
    add_compact_lm_head(model)
    return model


def bf16_preparation(config: TrainConfig):
    """What turns a probed fp32 model into what a bf16 run of this config trains (see ``load_base_model``)."""
    return prepare_bf16_lora if config.method == "lora" else None


PROBE_LENGTH = 512  # longer sequences are timed at 512 tokens: the cost per token barely grows beyond it


def probe_inputs(tokenizer, rows: list[dict], max_length: int, batch_size: int, answers_only: bool = True):
    """(input_ids, labels): a batch of real training tokens at the run's batch size and sequence length (up to
    PROBE_LENGTH, so that timing a slow precision on a slow CPU does not take minutes). With `answers_only`
    the labels learn the answers only (-100 on the prompts), as assistant-only training does, so the probe
    pays for the LM head on as many positions as training does."""
    import torch

    max_length = min(max_length, PROBE_LENGTH)
    ids: list[int] = []
    learned: list[bool] = []
    for row in rows[:2000]:
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=True, return_dict=False,
                                               add_generation_prompt=True)
        ids += full
        learned += [not answers_only or i >= len(prompt) for i in range(len(full))]
        if len(ids) >= max_length * batch_size:
            break
    need = max_length * batch_size
    repeat = need // max(len(ids), 1) + 1
    ids, learned = (ids * repeat)[:need], (learned * repeat)[:need]
    input_ids = torch.tensor(ids, dtype=torch.long).view(batch_size, max_length)
    labels = torch.where(torch.tensor(learned).view(batch_size, max_length), input_ids, -100)
    return input_ids, labels


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


def checkpoint_on_cancel(trainer, output_dir: Path, log) -> None:
    """Save the state after the last finished step, so a resume loses nothing of the work done.
    A step cut short never reached the optimizer, so the weights and the step count agree."""
    from transformers.trainer_utils import get_last_checkpoint

    step = trainer.state.global_step
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if step <= 0 or (last and Path(last).name == f"checkpoint-{step}"):
        return
    try:
        trainer._save_checkpoint(trainer.model, trial=None)
        log(event="checkpoint", step=step, reason="cancelled")
    except Exception as exc:  # noqa: BLE001  (the previous checkpoint still resumes)
        log(event="warning", message=f"no checkpoint at step {step} on cancel ({exc}); resume starts from "
                                     f"{Path(last).name if last else 'the beginning'}")


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
    return 0 if status.get("status") in (JobStatus.SUCCEEDED, JobStatus.CANCELLED) else 1


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
