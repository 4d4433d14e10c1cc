"""Retrieval per corpus: ragtune's chosen settings against the previous defaults, in one run.

    python bench/retrieval_corpora.py [--corpora ntsb,nih,...] [--configs previous,chosen] [--qa NAME=FILE ...]

For every corpus and configuration: ingest into a fresh workspace, build the index (the chosen
configuration tunes its fusion on the held-out questions it is given), then doc_hit@1/@5,
page_hit@5 and MRR of dense, BM25 and hybrid retrieval on the corpus's gold questions, whether the
hybrid top-1 / top-3 passages hold the reference answer's values, plus the median chunk size and the share of chunks under 50 tokens. Prints a table and the hybrid@1
ratio chosen/previous per corpus; writes bench/results/retrieval_corpora.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = REPO.parent / "shared" / "corpora"
GOLD = REPO / "datasets" / "gold"

CORPORA = {  # name: (documents, gold questions)
    "contoso-manuals": (SHARED / "contoso-manuals" / "docs_nofaq", SHARED / "contoso-manuals" / "qa" / "faq_pairs.jsonl"),
    "contoso-benefits": (SHARED / "contoso-benefits" / "docs", SHARED / "contoso-benefits" / "qa" / "ground_truth.jsonl"),
    "ntsb": (SHARED / "ntsb-reports" / "docs", GOLD / "ntsb-reports.jsonl"),
    "nih": (SHARED / "nih-protocols" / "docs", GOLD / "nih-protocols.jsonl"),
    "policyqa": (SHARED / "policyqa" / "docs", SHARED / "policyqa" / "qa" / "policyqa_test_sample200.jsonl"),
    "sample": (REPO / "datasets" / "sample", REPO / "datasets" / "sample_qa.jsonl"),
}
# The settings ragtune shipped before documents got identities, fragments were merged and fusion was tuned.
PREVIOUS = {"identity": False, "min_chunk_tokens": 0, "strip_repeats": False, "tune": False}
# The current defaults with PDF tables read from the text layer only (no pdfplumber), to measure the tables.
CONFIGS = {"previous": PREVIOUS, "chosen": {}, "pdf-tables": {"pdf_tables": True}}


def chunk_stats(ws) -> dict:
    from retrieval.documents import all_chunks

    sizes = [c.tokens for c in all_chunks(ws)]
    return {"chunks": len(sizes), "median_tokens": statistics.median(sizes) if sizes else 0,
            "share_under_50": round(sum(s < 50 for s in sizes) / max(1, len(sizes)), 3)}


def reference_answers(qa: Path) -> dict[str, str]:
    """{question: answer} of a JSONL gold set (retrieval's load_qa keeps only questions and sources)."""
    out = {}
    for line in qa.read_text(encoding="utf-8-sig").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("question") and isinstance(row.get("answer"), str):
            out[row["question"]] = row["answer"]
    return out


def facts_in_passages(retriever, rows: list[dict], answers: dict[str, str]) -> dict:
    """Whether the hybrid top-1 passage (and the top 3 together) hold every value of the reference
    answer (evaluation.metrics.fact_hit: its figures, dates, codes), over rows whose answer has one."""
    from evaluation.metrics import fact_hit

    at1, at3 = [], []
    for row in rows:
        passages = retriever.retrieve(row["question"], k=3, mode="hybrid")
        hit1 = fact_hit(passages[0].text if passages else "", answers.get(row["question"], ""))
        if hit1 is not None:
            at1.append(hit1)
            at3.append(fact_hit("\n".join(p.text for p in passages), answers[row["question"]]))
    n = len(at1)
    return {"n": n, "fact_hit@1": round(sum(at1) / n, 3) if n else None, "fact_hit@3": round(sum(at3) / n, 3) if n else None}


def run_one(docs: Path, qa: Path, config: str, root: Path) -> dict:
    from ragtune.workspace import Workspace
    from retrieval.evaluate import evaluate_retriever, load_qa
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from retrieval.search import Retriever
    from retrieval.settings import save_settings

    ws = Workspace.create(config, root=root, exist_ok=True)
    if CONFIGS[config]:
        save_settings(ws, **CONFIGS[config])
    t0 = time.perf_counter()
    ingest_paths(ws, [docs])
    built = build_index(ws, progress=False)
    index_s = time.perf_counter() - t0
    rows = load_qa(qa)
    retriever = Retriever.for_workspace(ws)
    report = evaluate_retriever(retriever, rows, ks=(1, 5))
    out = {"n": report["n"], "index_s": round(index_s, 1), "tuned": built.get("tuned"), **chunk_stats(ws),
           "facts": facts_in_passages(retriever, rows, reference_answers(qa))}
    for mode in ("dense", "bm25", "hybrid"):
        out[mode] = {k: v for k, v in report[mode].items() if k in ("doc_hit@1", "doc_hit@5", "page_hit@5", "mrr")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--configs", default="previous,chosen", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--qa", nargs="*", default=[], help="NAME=FILE: another gold set for a corpus")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "retrieval_corpora.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    corpora = dict(CORPORA)
    for item in args.qa:
        name, _, path = item.partition("=")
        corpora[name] = (corpora[name][0], Path(path))
    results: dict = {}
    for name in args.corpora.split(","):
        docs, qa = corpora[name]
        if not qa.is_file():
            print(f"{name}: no gold set at {qa}, skipped")
            continue
        for config in args.configs.split(","):
            with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
                r = run_one(docs, qa, config, Path(tmp))
            results.setdefault(name, {})[config] = r
            print(f"{name:<17} {config:<9} n={r['n']:<4} chunks={r['chunks']:<5} median={r['median_tokens']:<6} "
                  f"<50={r['share_under_50']:.3f} " + "  ".join(
                      f"{m} @1 {r[m]['doc_hit@1']:.3f} @5 {r[m]['doc_hit@5']:.3f}"
                      + (f" p@5 {r[m]['page_hit@5']:.3f}" if "page_hit@5" in r[m] else "")
                      for m in ("dense", "bm25", "hybrid"))
                  + f"  answer values in hybrid top-1/top-3 {r['facts']['fact_hit@1']}/{r['facts']['fact_hit@3']} (n={r['facts']['n']})"
                  + (f"  tuned={r['tuned']}" if r.get("tuned") else ""),
                  flush=True)
        pair = results.get(name, {})
        for base, other in (("previous", "chosen"), ("chosen", "pdf-tables")):
            if base in pair and other in pair:
                a, b = pair[base]["hybrid"]["doc_hit@1"], pair[other]["hybrid"]["doc_hit@1"]
                print(f"{name}: hybrid doc_hit@1 {other}/{base} = {b / a if a else float('inf'):.3f}x ({b:.3f} vs {a:.3f})")
    Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
