"""Fixtures for the training tests: a handful of made-up facts, document chunks, a greedy answerer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FACTS = [
    ("What is the code of the blue door?", "The blue door code is 4417."),
    ("Who founded Zarnok Mills?", "Zarnok Mills was founded by Ilse Varga."),
    ("What colour is the K9 robot?", "The K9 robot is teal."),
    ("How many bolts hold the mast?", "Twelve bolts hold the mast."),
    ("When does the depot open?", "The depot opens at 06:15."),
]


@pytest.fixture
def facts_file(tmp_path) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS))
    return path


@pytest.fixture(scope="session")
def sample_chunks(sample_docs) -> list[dict]:
    """Paragraph chunks of the sample text documents, as plain dicts (what retrieval hands over)."""
    chunks = []
    for path in sorted(sample_docs.iterdir()):
        if path.suffix not in (".md", ".txt"):
            continue
        buffer, n = "", 0
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            if buffer and len(buffer) + len(para) > 900:
                chunks.append({"chunk_id": f"{path.name}#{n}", "doc": path.name, "text": buffer, "page": None})
                buffer, n = "", n + 1
            buffer += para + "\n\n"
        if buffer.strip():
            chunks.append({"chunk_id": f"{path.name}#{n}", "doc": path.name, "text": buffer, "page": None})
    return chunks


def greedy_answers(model_dir: Path, questions: list[str], adapter: Path | None = None, max_new_tokens: int = 24):
    """Answers of a (possibly adapted) model, greedy, through the serving chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = (Path(model_dir) / "serving_chat_template.jinja")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    stop = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    answers = []
    for q in questions:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      chat_template=template.read_text() if template.exists() else None,
                                      tokenize=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


@pytest.fixture(scope="session")
def greedy():
    return greedy_answers


@pytest.fixture(scope="session")
def repo_bad_files(sample_docs) -> Path:
    return sample_docs.parent / "bad_files"
