"""RAG vs the base model on contoso-manuals (docs_nofaq indexed, qa/faq_pairs.jsonl), Gemma 3 270M on CPU.

    python bench/eval_contoso.py [--limit 24] [--max-tokens 64] [--variants base,rag] [--threads 1]

Prints every metric per variant with its 95% bootstrap interval, the paired differences, the
recommendation, and the RAG/base ratio on token F1 and semantic similarity (same run, same
questions). Writes bench/results/eval_contoso.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
CORPUS = REPO.parent / "shared" / "corpora" / "contoso-manuals"


def spread_subset(rows: list[dict], limit: int | None) -> list[dict]:
    """Every n-th question, so a small subset still covers all the products."""
    if not limit or limit >= len(rows):
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def prepare_workspace(root: Path):
    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths

    ws = Workspace.create("contoso", root=root, exist_ok=True)
    ingest_paths(ws, [CORPUS / "docs_nofaq"])
    build_index(ws, progress=False)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--variants", default="base,rag")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is steadier on 2-core machines)")
    parser.add_argument("--workspace-root", help="keep the workspace here (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from evaluation.qa_sets import load_qa_file
    from evaluation.report import summary_markdown
    from evaluation.runner import run_eval
    from serving.engine import SamplingOptions
    from serving.factory import get_engine

    root = Path(args.workspace_root or tempfile.mkdtemp(prefix="ragtune-bench-"))
    t0 = time.perf_counter()
    ws = prepare_workspace(root)
    t_index = time.perf_counter() - t0
    rows = spread_subset(load_qa_file(CORPUS / "qa" / "faq_pairs.jsonl")[0], args.limit)
    engine = get_engine("embedded", model=args.model)
    t1 = time.perf_counter()
    run = run_eval(ws, rows, args.variants, engine, options=SamplingOptions(max_tokens=args.max_tokens),
                   source="contoso-manuals faq_pairs", progress=lambda d, t, _: print(f"\r{d}/{t}", end="", flush=True))
    t_eval = time.perf_counter() - t1
    print()
    s = run.summary
    print(summary_markdown(s))
    ratios = {}
    if "rag" in s["variants"] and "base" in s["variants"]:
        for metric in ("token_f1", "semantic_similarity"):
            base = s["variants"]["base"]["metrics"][metric]["mean"]
            rag = s["variants"]["rag"]["metrics"][metric]["mean"]
            ratios[metric] = rag / base if base else float("inf")
            print(f"ratio rag/base {metric}: {ratios[metric]:.2f}x")
    print(f"index {t_index:.0f} s, {len(run.results)} answers in {t_eval:.0f} s "
          f"({run.computed} generated, {run.cached} cached)")
    out = REPO / "bench" / "results" / "eval_contoso.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"questions": len(rows), "max_tokens": args.max_tokens, "ratios": ratios,
                               "index_s": t_index, "eval_s": t_eval, "summary": s}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
