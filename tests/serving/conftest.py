"""Fixtures for the serving tests: the tiny model as an engine, real LoRA training, a small indexed workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.net import free_port

# Distinctive facts no base model knows: an adapter that learned them answers differently.
FACTS = [
    ("What is the Zorblax access code?", "The Zorblax access code is PURPLE-7741."),
    ("Who repairs the K7 drive wheel?", "Wheel repairs are done by Dana Okafor."),
    ("Which dock charges the K7?", "The K7 charges at dock CD-40."),
]


def train_lora(model_path: Path, out: Path, facts=FACTS, *, steps: int = 20, lr: float = 1e-2, rank: int = 8,
               targets=("q_proj", "k_proj", "v_proj", "o_proj"), seed: int = 0) -> Path:
    """A real LoRA fine-tune with peft: a few optimizer steps on the chat-formatted facts, answer tokens only."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    template = (model_path / "serving_chat_template.jinja").read_text()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    batch = []
    for question, answer in facts:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], chat_template=template,
                                               add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt + answer + "<end_of_turn>\n", add_special_tokens=False, return_tensors="pt").input_ids
        labels = ids.clone()
        labels[:, : len(tokenizer(prompt, add_special_tokens=False).input_ids)] = -100
        batch.append((ids, labels))
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for step in range(steps):
        ids, labels = batch[step % len(batch)]
        peft_model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out


def register(ws, name: str, folder: Path, base_model: str):
    from ragtune.adapters import AdapterInfo, register_adapter

    return register_adapter(ws, AdapterInfo(name=name, path=str(folder), base_model=base_model, method="lora"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_llm):
    from serving.factory import get_engine

    return get_engine("embedded", model="tiny-llama")


@pytest.fixture(scope="session")
def tiny_fact_lora(tiny_llm, tmp_path_factory) -> Path:
    """The tiny model, fine-tuned (LoRA, ~20 steps) until it answers FACTS."""
    return train_lora(tiny_llm, tmp_path_factory.mktemp("lora") / "tiny-facts", steps=30)


@pytest.fixture(scope="session")
def indexed_workspace(tmp_path_factory, sample_docs):
    """A workspace with two sample documents (a PDF and Markdown) ingested and indexed, real embedder."""
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from ragtune.workspace import Workspace

    ws = Workspace.create("served", root=tmp_path_factory.mktemp("workspaces"))
    results = ingest_paths(ws, [sample_docs / "product_manual_k7.pdf", sample_docs / "faq.md"])
    assert all(r.status == "added" for r in results), [r.to_dict() for r in results]
    build_index(ws, progress=False)
    return ws


@pytest.fixture
def port_factory():
    return free_port


@pytest.fixture(scope="session")
def lora_trainer():
    return train_lora


@pytest.fixture(scope="session")
def adapter_registrar():
    return register


@pytest.fixture(scope="session")
def facts():
    return FACTS
