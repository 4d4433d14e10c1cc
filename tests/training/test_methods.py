"""QLoRA and full fine-tuning on the tiny model, and merging an adapter into its base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.adapters import get_adapter
from ragtune.jobs import JobReporter, read_log
from training.config import defaults_for
from training.merge import merge_adapter
from training.run import train

from .conftest import FACTS

pytestmark = pytest.mark.timeout(300)


def test_qlora_trains_through_a_fresh_4bit_model(workspace, facts_file, tmp_path):
    config = defaults_for("tiny-llama", "qlora", dataset=str(facts_file), adapter_name="q", max_steps=12)
    with JobReporter(tmp_path / "job") as reporter:
        result = train(workspace, config, reporter)
    assert result["method"] == "qlora" and "4-bit NF4" in result["method_label"]
    rows, _ = read_log(tmp_path / "job" / "log.jsonl")
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    assert losses[-1] < losses[0] / 2, losses  # gradients reach the adapters through the 4-bit base
    folder = Path(result["path"])
    assert (folder / "adapter_model.safetensors").exists()
    assert get_adapter(workspace, "q").method == "qlora"


def test_full_finetune_saves_a_complete_model(workspace, facts_file, tiny_llm, greedy):
    config = defaults_for("tiny-llama", "full", dataset=str(facts_file), adapter_name="full", epochs=30)
    result = train(workspace, config)
    folder = Path(result["path"])
    assert result["method"] == "full"
    assert {"config.json", "model.safetensors", "tokenizer.json", "serving_chat_template.jinja"} <= {
        p.name for p in folder.iterdir()}
    assert greedy(folder, [FACTS[0][0]]) == [FACTS[0][1]]


def test_merge_matches_the_adapter(workspace, facts_file, tiny_llm, greedy):
    result = train(workspace, defaults_for("tiny-llama", "lora", dataset=str(facts_file), adapter_name="m"))
    out = merge_adapter(workspace, "m", register=True)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    questions = [q for q, _ in FACTS]
    assert greedy(out, questions) == greedy(tiny_llm, questions, adapter=Path(result["path"]))
    merged = get_adapter(workspace, out.name)
    assert merged.method == "full" and merged.config["merged_from"] == "m"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
