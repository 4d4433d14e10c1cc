"""No answer repeats ragtune's own prompt wording: every recorded Gemma 3 270M answer of the RAG benches
(bench/eval_rag_gold.py writes them to bench/results/eval_rag_*.json) is grepped for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.leaks import leaking_answers

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.mark.xfail(strict=True, reason=(
    "issue 12, open: the recorded NTSB run of the current default (no worked example) has every RAG answer "
    "of Gemma 3 270M repeating the rag system prompt (54 of 108 answers)"))
def test_recorded_answers_hold_no_ragtune_prompt_text():
    files = sorted(RESULTS.glob("eval_rag_*.json"))
    assert files, "run bench/eval_rag_gold.py to record answers"
    for path in files:
        answers = [a["text"] for a in json.loads(path.read_text(encoding="utf-8"))["answers"]]
        assert answers
        leaks = leaking_answers(answers)
        assert not leaks, f"{path.name}: {[answers[i][:120] for i, _ in leaks[:3]]}"
        assert not any("#page=" in a or ', section "' in a for a in answers), path.name  # no echoed headers


def test_the_grep_finds_a_copied_instruction():
    assert leaking_answers(["Answer the question using only the numbered passages. Cite each passage."])
