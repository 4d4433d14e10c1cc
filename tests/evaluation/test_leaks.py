"""No answer repeats ragtune's own prompt wording: every recorded Gemma 3 270M answer of the RAG benches
(bench/eval_rag_gold.py writes them to bench/results/eval_rag_*.json) is grepped for it."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.leaks import leaking_answers

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def test_recorded_answers_hold_no_ragtune_prompt_text():
    files = sorted(RESULTS.glob("eval_rag_*.json"))
    # The two runs issue 12 names: a corpus of forms (NTSB) and one of prose (PolicyQA).
    assert {"eval_rag_ntsb.json", "eval_rag_policyqa.json"} <= {f.name for f in files}, "run bench/eval_rag_gold.py"
    for path in files:
        answers = [a["text"] for a in json.loads(path.read_text(encoding="utf-8"))["answers"]]
        assert answers
        leaks = leaking_answers(answers)
        assert not leaks, f"{path.name}: {[answers[i][:120] for i, _ in leaks[:3]]}"
        assert not any("#page=" in a or ', section "' in a for a in answers), path.name  # no echoed headers


def test_the_grep_finds_a_copied_instruction():
    assert leaking_answers(["Answer the question using only the numbered passages. Cite each passage."])
