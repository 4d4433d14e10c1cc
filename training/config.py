"""What one training run does: a dataclass with sensible defaults per base model.

``defaults_for(base_model, method)`` gives the starting point; every field can be overridden
(``dataclasses.replace``, the CLI flags of ``ragtune train``, the UI form).
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields, replace

from ragtune.errors import BadInputError
from ragtune.models import DEFAULT_LLM, canonical_name

METHODS = ("lora", "qlora", "full")
DEFAULT_CPU_BUDGET_MIN = 20.0  # a coffee break: long enough to learn a few hundred facts on a 2-core CPU
# Attention and MLP projections: the standard LoRA targets for Gemma, Llama, Mistral, Qwen.
PROJECTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    base_model: str = DEFAULT_LLM
    method: str = "lora"  # "lora" (low-rank adapters), "qlora" (4-bit NF4 base + adapters), "full" (every weight)
    dataset: str | None = None  # a dataset version of the workspace ("v3"), or a .jsonl/.csv file
    adapter_name: str | None = None  # default: "<model>-<method>-<dataset>-<time>"
    epochs: float = 3.0
    lr: float = 2e-4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTION_MODULES))
    max_length: int | None = 512  # tokens per (packed) sequence; None: the shortest of 128..2048 that holds every row
    packing: bool = True  # best-fit packing into padding-free batches
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_steps: int = -1  # > 0 overrides epochs
    assistant_only_loss: bool = True  # learn the answers, not the questions
    bf16: bool | None = field(default=None, metadata={"help": (
        "bf16 mixed precision: true, false or auto (None). Auto: on CPU the faster of fp32 and bf16 autocast, "
        "timed on a few real steps before the run; on a GPU bf16 where supported")})
    gradient_checkpointing: bool = False  # on CPU it costs ~36% time for little memory
    eval_each_epoch: bool = True
    early_stopping_patience: int | None = None  # epochs without a better eval loss before stopping
    save_steps: int = 50  # checkpoint interval, for resume after a crash
    seed: int = 42
    num_threads: int | None = field(default=None, metadata={"help": (
        "CPU threads for the job; None: the fastest of 1, half and all cores, timed before the run")})
    time_budget: float | None = field(default=None, metadata={"help": (
        "minutes the whole job may take; the most useful rows (and epochs) that fit are kept. "
        "None: 20 on CPU, no limit on a GPU; 0: no limit")})
    accelerate_config: str | None = None  # an `accelerate launch` YAML (multi-GPU: DDP, DeepSpeed, FSDP)

    def validate(self) -> "TrainConfig":
        if self.method not in METHODS:
            raise BadInputError(f"Unknown training method '{self.method}': use one of {', '.join(METHODS)}.")
        checks = [
            (self.epochs > 0 or self.max_steps > 0, "epochs must be positive"),
            (self.lr > 0, "the learning rate must be positive"),
            (self.rank > 0 and self.alpha > 0, "LoRA rank and alpha must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.max_length is None or self.max_length >= 16, "max_length must be at least 16 tokens"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch size and gradient accumulation must be >= 1"),
            (self.save_steps >= 1, "save_steps must be >= 1"),
            (self.time_budget is None or self.time_budget >= 0, "the time budget must be >= 0 minutes"),
            (self.num_threads is None or self.num_threads >= 1, "num_threads must be >= 1"),
            (bool(self.target_modules) or self.method == "full", "LoRA needs at least one target module"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInputError(f"Invalid training configuration: {message}.")
        if self.accelerate_config and not Path(self.accelerate_config).expanduser().is_file():
            raise BadInputError(f"accelerate config {self.accelerate_config} does not exist "
                                "(see examples/accelerate/ for DDP, DeepSpeed and FSDP configs).")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise BadInputError("Invalid training configuration: early_stopping_patience must be >= 1 or unset.")
        return self

    def budget_seconds(self, on_gpu: bool) -> float | None:
        """The time budget in seconds: the set one, else 20 minutes on CPU and none on a GPU; 0 means none."""
        minutes = self.time_budget if self.time_budget is not None else (None if on_gpu else DEFAULT_CPU_BUDGET_MIN)
        return minutes * 60 if minutes else None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BadInputError(f"Unknown training options: {', '.join(sorted(unknown))}.")
        return cls(**d)


def _family(base_model: str) -> str:
    name = canonical_name(base_model).lower()
    if name in ("tiny-llama", "tiny-gemma"):
        return "tiny"
    if "gemma" in name and "270m" in name:
        return "gemma-270m"
    if any(s in name for s in ("1b", "0.5b", "500m", "360m", "135m")):
        return "small"
    return "large"


def defaults_for(base_model: str = DEFAULT_LLM, method: str = "lora", **overrides) -> TrainConfig:
    """Starting values that work for this model size and method; `overrides` win."""
    family = _family(base_model)
    base = TrainConfig(base_model=base_model, method=method)
    if family == "tiny":
        # Random tiny models (tests): a high rate memorises a few facts in ~20 steps.
        base = replace(base, lr=1e-2, rank=8, alpha=16, dropout=0.0, epochs=20, max_length=128,
                       batch_size=4, warmup_ratio=0.0, lr_scheduler="constant", save_steps=10)
    elif family == "gemma-270m":
        # Short packed sequences (auto length: the shortest that holds every row) and batch 1 give many optimizer
        # steps on a small set; measured on 60 Q&A x 3 epochs: 128-token packs 66 steps, fact hit 0.36; 512-token
        # packs 15 steps, 0.15 (docs/training.md).
        base = replace(base, lr=1e-3, rank=16, alpha=32, epochs=4, max_length=None, batch_size=1)
    elif family == "small":
        base = replace(base, lr=2e-4, rank=16, alpha=32, epochs=3, max_length=1024, batch_size=4)
    else:
        base = replace(base, lr=1e-4, rank=16, alpha=32, epochs=2, max_length=2048, batch_size=2, grad_accum=8,
                       gradient_checkpointing=True)
    if method == "full":
        # Every weight moves: a much smaller step, fewer epochs.
        base = replace(base, lr=base.lr / 10 if family != "tiny" else 1e-3, epochs=min(base.epochs, 3))
        if family == "large":
            raise BadInputError(
                f"Full fine-tuning of '{base_model}' needs far more memory than LoRA; use method 'lora' or 'qlora'."
            )
    return replace(base, **overrides).validate() if overrides else base.validate()
