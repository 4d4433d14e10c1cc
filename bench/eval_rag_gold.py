"""RAG vs the base model with Gemma 3 270M on a gold set of a real corpus, and a grep of every answer
for ragtune's own prompt wording.

    python bench/eval_rag_gold.py --corpus ntsb|nih|policyqa [--limit N] [--max-tokens 48] [--workspace DIR]

Indexes the corpus in a fresh workspace (the fusion is tuned on questions made from the corpus,
never on the gold set), answers every gold question with base and rag, prints each metric with
its 95% interval, the paired rag - base differences, the recommendation, and how many answers
hold six consecutive words of ragtune's prompts. Writes bench/results/eval_rag_<corpus>.json with
the summary and every answer (tests/evaluation/test_leaks.py greps them). ``--workspace`` reuses the
workspace of an earlier run (printed by it): its index and cached answers, so only what changed since
(scoring, say) is computed again.
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
SHARED = REPO.parent / "shared" / "corpora"
CORPORA = {
    "ntsb": (SHARED / "ntsb-reports" / "docs", REPO / "datasets" / "gold" / "ntsb-reports.jsonl"),
    "nih": (SHARED / "nih-protocols" / "docs", REPO / "datasets" / "gold" / "nih-protocols.jsonl"),
    "policyqa": (SHARED / "policyqa" / "docs", SHARED / "policyqa" / "qa" / "policyqa_test_sample200.jsonl"),
}


def spread_subset(rows: list[dict], limit: int | None) -> list[dict]:
    if not limit or limit >= len(rows):
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--workspace", type=Path, help="an earlier run's workspace folder, to reuse")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from evaluation.leaks import leaking_answers
    from evaluation.qa_sets import load_qa_file
    from evaluation.report import summary_markdown
    from evaluation.runner import run_eval
    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from serving.engine import SamplingOptions
    from serving.factory import get_engine

    docs, qa = CORPORA[args.corpus]
    if args.workspace:
        ws = Workspace.open(args.workspace)
    else:
        ws = Workspace.create(args.corpus, root=Path(tempfile.mkdtemp(prefix="ragtune-bench-")))
    print(f"workspace {ws.root}", flush=True)
    t0 = time.perf_counter()
    if not args.workspace:
        ingest_paths(ws, [docs])
    built = build_index(ws, progress=False)  # a current index is kept as it is
    t_index = time.perf_counter() - t0
    rows = spread_subset(load_qa_file(qa)[0], args.limit)
    engine = get_engine("embedded", model=args.model)
    t1 = time.perf_counter()
    run = run_eval(ws, rows, "base,rag", engine, options=SamplingOptions(max_tokens=args.max_tokens),
                   source=f"{args.corpus} gold", progress=lambda d, t, _: print(f"\r{d}/{t}", end="", flush=True))
    t_eval = time.perf_counter() - t1
    print()
    s = run.summary
    print(summary_markdown(s))
    answers = [{"idx": r["idx"], "variant": r["variant"], "question": rows[r["idx"]]["question"],
                "reference": rows[r["idx"]]["answer"], "text": r["answer"].get("text", "")} for r in run.results]
    leaks = leaking_answers([a["text"] for a in answers])
    print(f"answers holding ragtune prompt text: {len(leaks)} of {len(answers)}")
    print(f"fusion: {built.get('tuned', {}).get('settings')}; index {t_index:.0f} s, {len(run.results)} answers in "
          f"{t_eval:.0f} s, max_tokens {args.max_tokens}, {len(rows)} questions")
    out = REPO / "bench" / "results" / f"eval_rag_{args.corpus}.json"
    out.write_text(json.dumps({"corpus": args.corpus, "questions": len(rows), "max_tokens": args.max_tokens,
                               "model": args.model, "tuned": built.get("tuned"), "eval_s": t_eval,
                               "leaking_answers": len(leaks), "summary": s, "answers": answers},
                              indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
