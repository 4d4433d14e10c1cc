"""contoso-manuals: groundedness on real manual text, and RAG against the base model with Gemma 270M."""

from __future__ import annotations

import pytest

from evaluation.metrics import groundedness
from evaluation.qa_sets import load_qa_file
from evaluation.runner import run_eval
from ragtune.workspace import Workspace
from retrieval.index import build_index
from retrieval.ingest import ingest_paths
from serving.engine import SamplingOptions
from serving.factory import get_engine

DOCS = "contoso-manuals/docs_nofaq"


def sections(path) -> list[str]:
    """The manual split at its headings, each section prefixed with the product line, as passages."""
    text = path.read_text(encoding="utf-8")
    title = text.splitlines()[1]
    return [f"{title}\n{part.strip()}" for part in text.split("\n## ") if part.strip()]


# (document, answer copied from it, answer contradicting it), written by hand from the manuals.
CASES = [
    ("product_info_1.md", "The weight is 12 lbs and the number of doors is 2.",
     "The weight is 20 lbs and the number of doors is 3."),
    ("product_info_1.md", "The TrailMaster X4 Tent has a season rating of 3-season and a floor area of 80 square feet.",
     "The TrailMaster X4 Tent has a season rating of 4-season and a floor area of 120 square feet."),
    ("product_info_3.md", "The Summit Breeze Jacket is covered by a 1-year limited warranty from the date of purchase.",
     "The Summit Breeze Jacket is covered by a 5-year limited warranty from the date of purchase."),
    ("product_info_3.md", "The warranty does not cover damages caused by accidents or normal wear and tear.",
     "The warranty covers damages caused by accidents and normal wear and tear."),
    ("product_info_7.md", "Do not place the sleeping bag near open flames or direct heat sources.",
     "You can place the sleeping bag near open flames and direct heat sources."),
    ("product_info_7.md", "The CozyNights Sleeping Bag weighs 3.5 lbs. Do not store the sleeping bag when it is damp or wet.",
     "The CozyNights Sleeping Bag weighs 7 lbs. Store the sleeping bag when it is damp or wet."),
]


@pytest.mark.parametrize("doc,copied,contradicting", CASES)
def test_groundedness_separates_copied_from_contradicting(shared_corpora, doc, copied, contradicting):
    passages = sections(shared_corpora / DOCS / doc)
    good = groundedness(copied, passages)
    bad = groundedness(contradicting, passages)
    assert good.score == 1.0, [(c.claim, c.reason, c.coverage) for c in good.claims]
    assert bad.score == 0.0, [(c.claim, c.reason) for c in bad.claims]
    assert {c.reason for c in bad.claims} <= {"number mismatch", "negation mismatch"}


def test_groundedness_of_all_cases_separates_as_groups(shared_corpora):
    copied = [groundedness(c, sections(shared_corpora / DOCS / d)).score for d, c, _ in CASES]
    contradicting = [groundedness(x, sections(shared_corpora / DOCS / d)).score for d, _, x in CASES]
    assert min(copied) > max(contradicting)


@pytest.mark.slow
@pytest.mark.acceptance  # about 17 min on one CPU core: not in the default run (pytest -m acceptance)
@pytest.mark.timeout(2400)  # over the suite's 900 s per test
def test_rag_beats_base_on_contoso_with_separate_intervals(tmp_path, shared_corpora, gemma_llm):
    """Gemma 3 270M on CPU, every one of the 89 FAQ questions, answers up to 48 tokens. On a 20-question
    subset the two intervals overlapped (RAG 0.395 [0.343, 0.449] vs base 0.319 [0.275, 0.364]); on all 89
    (bench/eval_contoso.py --limit 89 --max-tokens 48, the same computation) RAG 0.373 [0.345, 0.398] vs
    base 0.273 [0.250, 0.297]."""
    ws = Workspace.create("contoso", root=tmp_path)
    ingest_paths(ws, [shared_corpora / DOCS])
    build_index(ws, progress=False)
    rows = load_qa_file(shared_corpora / "contoso-manuals" / "qa" / "faq_pairs.jsonl")[0]
    assert len(rows) == 89
    run = run_eval(ws, rows, "base,rag", get_engine("embedded", model="gemma-3-270m"),
                   options=SamplingOptions(max_tokens=48))
    rag = run.summary["variants"]["rag"]["metrics"]["token_f1"]
    base = run.summary["variants"]["base"]["metrics"]["token_f1"]
    assert rag["ci_low"] > base["ci_high"], (rag, base)
    assert run.summary["recommendation"]["verdict"] == "rag"
    assert run.summary["variants"]["rag"]["metrics"]["hit_at_k"]["mean"] > 0.5
