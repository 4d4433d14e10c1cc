"""Fixtures for the evaluation tests: the tiny model as an engine, and a LoRA adapter for it."""

from __future__ import annotations

import pytest

from ragtune.adapters import AdapterInfo, adapter_path, register_adapter
from ragtune.models import resolve_llm
from serving.factory import get_engine


@pytest.fixture(scope="session")
def tiny_engine(tiny_llm):
    return get_engine("embedded", model="tiny-llama")


def make_adapter(ws, name: str = "tiny-lora", seed: int = 0):
    """An untrained LoRA on the tiny model (B initialised to random, so it changes the answers)."""
    import torch  # heavy: only the tests that build an adapter load it
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_llm("tiny-llama").path)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    folder = adapter_path(ws, name)
    peft_model.save_pretrained(folder)
    return register_adapter(ws, AdapterInfo(name=name, path=str(folder), base_model="tiny-llama", method="lora",
                                            metrics={"train_runtime": 12.5}))


@pytest.fixture
def tiny_adapter(workspace):
    return make_adapter(workspace)


@pytest.fixture
def adapter_factory():
    return make_adapter
