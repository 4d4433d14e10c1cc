"""Loops and echoes of RAG answers with and without a frequency penalty, on people's questions.

    python bench/generation_loops.py [--corpora ntsb-paraphrased,policyqa,contoso-benefits] [--limit 20]
        [--penalties 0,0.6] [--max-tokens 64] [--engine embedded|vllm] [--root DIR]

For each corpus: the workspace of bench/fusion_choice.py (same --root; built there if missing), the
first --limit gold questions, RAG answers from Gemma 3 270M at each frequency penalty (the penalty of
0 is the baseline, measured in the same run), and per penalty the loop rate, echo rate, token F1, claim
recall and semantic similarity with 95% intervals, plus the paired difference of each metric against
penalty 0. Writes bench/results/generation_loops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METRICS = ("loop_rate", "echo_rate", "token_f1", "claim_recall", "semantic_similarity", "completion_tokens")


def gold_rows(path: Path, limit: int) -> list[dict]:
    """The first `limit` rows of a gold set, read as `ragtune eval` reads a test file (answer/truth/... keys)."""
    from evaluation.qa_sets import load_qa_file

    return load_qa_file(path)[0][:limit]


def main() -> None:
    from fusion_choice import CORPORA

    parser = argparse.ArgumentParser()
    parser.add_argument("--corpora", default="ntsb-paraphrased,policyqa,contoso-benefits")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--penalties", default="0,0.6")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engine", choices=("embedded", "vllm"), default="embedded")
    parser.add_argument("--root", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "ragtune-bench-fusion"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "generation_loops.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from evaluation.runner import per_question, run_eval
    from evaluation.stats import paired_test
    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from serving.engine import SamplingOptions
    from serving.factory import get_engine

    engine = get_engine(args.engine, model="gemma-3-270m")
    penalties = [float(p) for p in args.penalties.split(",")]
    results: dict = {}
    for name in args.corpora.split(","):
        docs, qa = CORPORA[name]
        ws = Workspace.create(name if name != "ntsb-paraphrased" else "ntsb", root=Path(args.root), exist_ok=True)
        ingest_paths(ws, [docs])
        build_index(ws, progress=False)
        rows = gold_rows(qa, args.limit)
        runs = {}
        for penalty in penalties:
            t0 = time.perf_counter()
            options = SamplingOptions(max_tokens=args.max_tokens, frequency_penalty=penalty)
            runs[penalty] = run_eval(ws, rows, ["rag"], engine, options=options, source=f"bench {name}")
            summary = runs[penalty].summary["variants"]["rag"]["metrics"]
            line = {m: summary.get(m) for m in METRICS}
            line["wall_s"] = round(time.perf_counter() - t0, 1)
            if penalty != penalties[0]:
                line["paired_vs_first"] = {
                    m: paired_test(per_question(runs[penalty], "rag", m), per_question(runs[penalties[0]], "rag", m),
                                   a=f"penalty {penalty}", b=f"penalty {penalties[0]}", metric=m).to_dict()
                    for m in METRICS[:5]}
            results.setdefault(name, {})[str(penalty)] = line
            print(f"{name:<17} penalty {penalty:<4} n={len(rows)} " + "  ".join(
                f"{m} {line[m]['mean']:.3f} [{line[m]['ci_low']:.3f}, {line[m]['ci_high']:.3f}]"
                for m in METRICS if line.get(m)) + f"  ({line['wall_s']} s)", flush=True)
            for m, p in (line.get("paired_vs_first") or {}).items():
                if p.get("mean_diff") is not None:
                    print(f"{'':<17}   {m} vs penalty {penalties[0]}: {p['mean_diff']:+.3f} "
                          f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"engine": args.engine, "max_tokens": args.max_tokens, "limit": args.limit,
                                          "results": results}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
