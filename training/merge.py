"""Merge a LoRA/QLoRA adapter into its base model and export a plain safetensors model folder.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` or as a vLLM ``--model``,
with no peft at serving time. A QLoRA adapter is merged into the full-precision base (merging into
4-bit weights would round the update away).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ragtune.adapters import AdapterInfo, adapter_path, get_adapter, register_adapter
from ragtune.atomic import atomic_directory
from ragtune.errors import BadInputError
from ragtune.models import SERVING_TEMPLATE, resolve_llm


def merge_adapter(ws, name: str, out: Path | None = None, *, register: bool = False) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = get_adapter(ws, name)
    if info.method == "full":
        raise BadInputError(f"'{name}' is a full fine-tune: it is already a complete model at {info.path}.")
    base = resolve_llm(info.base_model, progress=False).path
    out = Path(out) if out else adapter_path(ws, f"{name}-merged"[:64])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, info.path).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base)
    with atomic_directory(out) as tmp:
        tmp.chmod(0o755)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if (base / SERVING_TEMPLATE).exists():
            shutil.copy(base / SERVING_TEMPLATE, tmp / SERVING_TEMPLATE)
    if register:
        register_adapter(ws, AdapterInfo(
            name=out.name, path=str(out), base_model=info.base_model, method="full", dataset=info.dataset,
            data_hash=info.data_hash, metrics=info.metrics,
            config={**info.config, "merged_from": name}, created_at=time.time()))
    return out
