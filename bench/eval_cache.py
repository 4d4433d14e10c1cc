"""How much a rerun saves: the same evaluation run twice, the second served from the answer cache.

    python bench/eval_cache.py [--model tiny-llama] [--limit 20]

Prints both wall times and the ratio (first run / cached rerun), measured in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from evaluation.qa_sets import load_qa_file
    from evaluation.runner import run_eval
    from ragtune.workspace import Workspace
    from serving.engine import SamplingOptions
    from serving.factory import get_engine

    ws = Workspace.create("bench", root=Path(tempfile.mkdtemp(prefix="ragtune-bench-")))
    rows = load_qa_file(REPO / "datasets" / "sample_qa.jsonl")[0][: args.limit]
    engine = get_engine("embedded", model=args.model)
    opts = SamplingOptions(max_tokens=args.max_tokens)
    run_eval(ws, rows[:1], ["base"], engine, options=opts)  # warm-up: model and embedder loaded
    t0 = time.perf_counter()
    first = run_eval(ws, rows, ["base"], engine, options=opts)
    t1 = time.perf_counter()
    again = run_eval(ws, rows, ["base"], engine, options=opts)
    t2 = time.perf_counter()
    print(f"first run: {t1 - t0:.2f} s ({first.computed} generated); rerun: {t2 - t1:.2f} s "
          f"({again.cached} from cache, {again.computed} generated)")
    print(f"ratio first/rerun: {(t1 - t0) / (t2 - t1):.1f}x")


if __name__ == "__main__":
    main()
