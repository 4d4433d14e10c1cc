"""Loops and echoes of RAG answers under repetition controls and passage counts, on people's questions.

    python bench/generation_loops.py [--corpora ntsb-paraphrased,policyqa,contoso-benefits] [--limit 20]
        [--penalties 0,0.6 | --settings default,fp=0,rp=1.1,ngram=3,k=3,...] [--max-tokens 64]
        [--engine embedded|vllm] [--root DIR] [--out FILE]

For each corpus: the workspace of bench/fusion_choice.py (same --root; built there if missing), the
first --limit gold questions, RAG answers from Gemma 3 270M under each setting, and per setting the
loop rate, echo rate, token F1, claim recall, semantic similarity and completion tokens with 95%
intervals, plus the paired difference of each metric against the first setting (the baseline,
measured in the same run).

A setting is `default` (the product's defaults: frequency penalty 0.6, the corpus's passage count) or
`+`-joined changes to it: `fp=` frequency penalty, `rp=` transformers' repetition penalty, `ngram=`
n-gram blocking (no_repeat_ngram_size; embedded engine only), `k=` passages per answer; e.g.
`fp=0+rp=1.1`. `--penalties 0,0.6` is the older spelling of `--settings fp=0,fp=0.6`.
Writes bench/results/generation_loops.json (or --out).
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
SETTING_KEYS = {"fp": ("frequency_penalty", float), "rp": ("repetition_penalty", float),
                "ngram": ("no_repeat_ngram_size", int), "k": ("k", int)}


def parse_setting(spec: str) -> dict:
    """`default` -> {}; `fp=0+rp=1.1` -> {"frequency_penalty": 0.0, "repetition_penalty": 1.1}."""
    changes: dict = {}
    for part in spec.split("+"):
        part = part.strip()
        if part in ("", "default"):
            continue
        key, sep, value = part.partition("=")
        if not sep or key not in SETTING_KEYS:
            raise SystemExit(f"unknown setting {part!r}: use default or {', '.join(k + '=' for k in SETTING_KEYS)}")
        name, cast = SETTING_KEYS[key]
        changes[name] = cast(value)
    return changes


def gold_rows(path: Path, limit: int) -> list[dict]:
    """The first `limit` rows of a gold set, read as `ragtune eval` reads a test file (answer/truth/... keys)."""
    from evaluation.qa_sets import load_qa_file

    return load_qa_file(path)[0][:limit]


def main() -> None:
    from fusion_choice import CORPORA

    parser = argparse.ArgumentParser()
    parser.add_argument("--corpora", default="ntsb-paraphrased,policyqa,contoso-benefits")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--penalties", default=None, help="frequency penalties: --settings fp=0,fp=0.6")
    parser.add_argument("--settings", default=None, help="the first is the baseline; default: fp=0,fp=0.6")
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
    if args.settings and args.penalties:
        raise SystemExit("--penalties is a spelling of --settings: give one of them")
    specs = (args.settings.split(",") if args.settings
             else [f"fp={p}" for p in (args.penalties or "0,0.6").split(",")])
    settings = {spec: parse_setting(spec) for spec in specs}
    first = specs[0]
    results: dict = {}

    def write() -> None:  # after every setting, so a stopped sweep keeps what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"engine": args.engine, "max_tokens": args.max_tokens,
                                              "limit": args.limit, "settings": settings, "baseline": first,
                                              "date": time.strftime("%Y-%m-%d"), "results": results},
                                             indent=2, default=str))

    for name in args.corpora.split(","):
        docs, qa = CORPORA[name]
        ws = Workspace.create(name if name != "ntsb-paraphrased" else "ntsb", root=Path(args.root), exist_ok=True)
        ingest_paths(ws, [docs])
        build_index(ws, progress=False)
        rows = gold_rows(qa, args.limit)
        runs = {}
        for spec, changes in settings.items():
            t0 = time.perf_counter()
            options = SamplingOptions(max_tokens=args.max_tokens,
                                      **{key: v for key, v in changes.items() if key != "k"})
            runs[spec] = run_eval(ws, rows, ["rag"], engine, options=options, k=changes.get("k"),
                                  source=f"bench {name}")
            summary = runs[spec].summary["variants"]["rag"]["metrics"]
            line = {m: summary.get(m) for m in METRICS}
            line["wall_s"] = round(time.perf_counter() - t0, 1)
            line["answers_computed"] = runs[spec].computed  # the rest came from the workspace's answer cache
            if spec != first:
                line["paired_vs_first"] = {
                    m: paired_test(per_question(runs[spec], "rag", m), per_question(runs[first], "rag", m),
                                   a=spec, b=first, metric=m).to_dict()
                    for m in METRICS}
            results.setdefault(name, {})[spec] = line
            print(f"{name:<17} {spec:<12} n={len(rows)} " + "  ".join(
                f"{m} {line[m]['mean']:.3f} [{line[m]['ci_low']:.3f}, {line[m]['ci_high']:.3f}]"
                for m in METRICS if line.get(m)) + f"  ({line['wall_s']} s, {line['answers_computed']} new)",
                flush=True)
            for m, p in (line.get("paired_vs_first") or {}).items():
                if p.get("mean_diff") is not None:
                    print(f"{'':<17}   {m} vs {first}: {p['mean_diff']:+.3f} "
                          f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]", flush=True)
            write()
    write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
