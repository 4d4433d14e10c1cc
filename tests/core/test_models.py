import json
import os
import subprocess
import sys

import pytest
import torch

from ragtune import models
from ragtune.errors import ModelNotFoundError


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_model_is_deterministic_and_loads(fresh_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = models.build_tiny_model(fresh_cache / "a", seed=0)
    b = models.build_tiny_model(fresh_cache / "b", seed=0)
    ma, mb = (AutoModelForCausalLM.from_pretrained(p) for p in (a, b))
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    tok = AutoTokenizer.from_pretrained(a)
    ids = tok("Lumora Robotics").input_ids
    assert ids[0] == tok.bos_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<bos><start_of_turn>user") and prompt.endswith("<start_of_turn>model\n")
    assert (a / models.SERVING_TEMPLATE).exists()


def test_resolve_is_idempotent(fresh_cache):
    first = models.resolve_llm("tiny-llama").path
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = models.resolve_llm("tiny-llama").path
    assert first == second
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_cache_is_detected_and_rebuilt(fresh_cache, damage):
    path = models.resolve_llm("tiny-llama").path
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(original[: len(original) // 2])
    elif damage == "flip":  # same size, one byte changed: only the checksum can tell
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        (path / models.MANIFEST).write_text("{not json")
    assert not models.verify_model_dir(path)
    rebuilt = models.resolve_llm("tiny-llama").path
    assert rebuilt == path
    assert models.verify_model_dir(path)
    assert weights.read_bytes() == original


def test_two_processes_build_once(fresh_cache):
    code = "from ragtune.models import resolve_llm; print(resolve_llm('tiny-gemma').path)"
    env = {**os.environ, "RAGTUNE_CACHE": str(fresh_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    folders = [p for p in (fresh_cache / "models").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders  # no leftover half-built temp folders
    assert models.verify_model_dir(folders[0])


def test_unknown_models_fail_with_guidance(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Unknown language model"):
        models.resolve_llm("no-such-model")
    with pytest.raises(ModelNotFoundError, match="offline"):
        models.resolve_llm("some-org/not-downloaded-model")


def test_local_folder_must_be_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.resolve_llm(str(tmp_path / "empty"))


def test_local_folder_resolves(tiny_llm):
    resolved = models.resolve_llm(str(tiny_llm))
    assert resolved.source == "local" and resolved.path == tiny_llm


def test_default_embedder_is_packaged():
    resolved = models.resolve_embedder()
    assert (resolved.path / "model.safetensors").exists()
    assert models.resolve_embedder("sentence-transformers/all-MiniLM-L6-v2").path == resolved.path


@pytest.mark.slow
def test_gemma_conversion_is_idempotent_with_bos_and_a_chat_template(gemma_llm):
    # A damaged cache is rebuilt by the same code for every model: test_corrupt_cache_is_detected_and_rebuilt
    # shows it on the tiny model, in seconds rather than the minute a Gemma conversion takes.
    from transformers import AutoTokenizer

    config = gemma_llm / "config.json"
    stamp = (gemma_llm / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_llm("gemma-3-270m", progress=False).path == gemma_llm
    assert (gemma_llm / "model.safetensors").stat().st_mtime_ns == stamp
    assert "quantization_config" not in json.loads(config.read_text())

    tok = AutoTokenizer.from_pretrained(gemma_llm)
    assert tok("hello").input_ids[0] == tok.bos_token_id  # Gemma degenerates without BOS
    assert "<start_of_turn>" in tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert models.verify_model_dir(gemma_llm)
