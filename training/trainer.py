"""The trainer of a training run: the base model for a method (bf16 LoRA, 4-bit QLoRA, full), its LoRA
config, and trl's SFTTrainer with packing at the shortest sequence length that holds every row.

``build_trainer`` is what a job trains with (``training.run``) and what the benchmarks time;
``trainable_model`` is the same model as the precision probe times it. torch, transformers, peft and trl
are imported inside the functions that use them, so importing ``training`` stays cheap.
"""

from __future__ import annotations

import functools
import os
import resource
from pathlib import Path

from ragtune.errors import BadInputError

from .config import TrainConfig
from .lm_head import add_compact_lm_head, adapter_inputs_stay_bf16, prepare_bf16_lora
from .lora_dropout import use_sixteen_bit_dropout


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
    from trl import SFTConfig

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
