"""`ragtune eval` on the embedded engine against one vLLM server, same questions, in one run.

    flock /tmp/ragtune-heavy.lock python bench/eval_engines.py                  # Gemma 3 270M, 40 questions
    python bench/eval_engines.py --model tiny-llama --questions 8 --max-tokens 8   # a quick check

It builds one workspace (the sample documents, their index, a short LoRA fine-tune so ft and
ft+rag have an adapter), copies it so each engine starts with an empty answer cache, then runs
``evaluation.service.evaluate`` with base,rag,ft,ft+rag on both: the embedded engine answers one
question at a time; vLLM gets several at once (``EvalConfig.concurrency``) on one server with the
adapter loaded at run time. Printed: wall time of each (vLLM's server start shown apart), the
ratio, and how many answers are identical under greedy decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
VARIANTS = "base,rag,ft,ft+rag"


def prepare_workspace(home: Path, model: str, train_steps: int):
    from ragtune.jobs import JobReporter
    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from training.config import defaults_for
    from training.run import train

    ws = Workspace.create("bench", root=home / "workspaces")
    ingest_paths(ws, [REPO / "datasets" / "sample"])
    build_index(ws, progress=False)
    config = defaults_for(model, dataset=str(REPO / "datasets" / "sample_train_qa.jsonl"), adapter_name="bench-ft",
                          max_steps=train_steps, num_threads=1, eval_each_epoch=False)
    started = time.perf_counter()
    with JobReporter(home / "train-job") as reporter:
        train(ws, config, reporter)
    return ws, time.perf_counter() - started


def run_engine(ws, engine_kind: str, model: str, questions: int, max_tokens: int) -> dict:
    from evaluation.service import EvalConfig, evaluate, evaluation_engine
    from evaluation.store import run_results
    from serving.factory import close_engine

    config = EvalConfig(qa="sample", variants=VARIANTS, limit=questions, max_tokens=max_tokens, engine=engine_kind,
                        model=model)
    started = time.perf_counter()
    engine = evaluation_engine(config, ws)
    engine.count_tokens("warm up")  # model loaded / server up before the clock for answers starts
    startup = time.perf_counter() - started
    last = [time.perf_counter()]

    def progress(done, total, label):
        if time.perf_counter() - last[0] >= 30 or done == total:
            last[0] = time.perf_counter()
            print(f"  {engine_kind}: {done}/{total} answers, {last[0] - started:.0f} s", flush=True)

    started = time.perf_counter()
    run = evaluate(ws, config, engine=engine, progress=progress)
    wall = time.perf_counter() - started
    results = run_results(ws, run.run_id)
    answers = {(r["idx"], r["variant"]): (r.get("answer") or {}).get("text", "") for r in results}
    server = getattr(engine, "server", None)
    server_env = server.environment() if server else {}
    close_engine(engine)  # each engine runs alone: no idle server or loaded model beside the next one
    return {"engine": run.config["engine"], "startup_s": round(startup, 1), "wall_s": round(wall, 1),
            "answers": len(answers), "computed": run.computed, "concurrency": config.concurrency,
            "server": server and {"max_lora_rank": server.max_lora_rank, "kv_cache_gib": server.kv_cache_gib,
                                  "dtype": server.dtype, "omp_bind": server_env.get("VLLM_CPU_OMP_THREADS_BIND"),
                                  "log": str(server.log_path)},
            "completion_tokens": sum((r.get("answer") or {}).get("completion_tokens") or 0 for r in results),
            "prompt_tokens": sum((r.get("answer") or {}).get("prompt_tokens") or 0 for r in results),
            "texts": answers, "token_f1": {v: s["metrics"].get("token_f1", {}).get("mean")
                                           for v, s in run.summary["variants"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--train-steps", type=int, default=10, help="LoRA steps for the ft adapter (default: 10)")
    parser.add_argument("--engines", default="vllm,embedded",
                        help="engines to run, in this order (default: %(default)s)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "eval_engines.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # steadier than two on a shared 2-core machine (docs/serving.md)
    home = Path(tempfile.mkdtemp(prefix="ragtune-eval-engines-"))
    os.environ["RAGTUNE_HOME"] = str(home)
    try:
        ws, train_s = prepare_workspace(home, args.model, args.train_steps)
        from ragtune.workspace import Workspace

        copy = home / "workspaces" / "bench-vllm"
        shutil.copytree(ws.root, copy)  # an empty answer cache for each engine
        results = {}
        folders = {"embedded": ws.root, "vllm": copy}
        for kind in [e.strip() for e in args.engines.split(",") if e.strip()]:
            folder = folders[kind]
            print(f"{kind}: {args.questions} questions x {VARIANTS} ...", flush=True)
            results[kind] = run_engine(Workspace.open(folder), kind, args.model, args.questions, args.max_tokens)
            r = results[kind]
            print(f"{kind}: {r['answers']} answers in {r['wall_s']} s (start-up {r['startup_s']} s, "
                  f"{r['concurrency']} at once)", flush=True)
        if len(results) < 2:
            print(json.dumps({k: {m: v for m, v in r.items() if m != "texts"} for k, r in results.items()}, indent=2))
            return
        emb, vll = results["embedded"], results["vllm"]
        same = sum(emb["texts"].get(k) == v for k, v in vll["texts"].items())
        same_by_variant = {v: sum(emb["texts"].get(k) == t for k, t in vll["texts"].items() if k[1] == v)
                           for v in VARIANTS.split(",")}
        differing = [{"question": k[0], "variant": k[1], "embedded": emb["texts"].get(k), "vllm": v}
                     for k, v in vll["texts"].items() if emb["texts"].get(k) != v]
        summary = {
            "model": args.model, "questions": args.questions, "variants": VARIANTS, "max_tokens": args.max_tokens,
            "train_steps": args.train_steps, "train_s": round(train_s, 1),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "embedded": {k: v for k, v in emb.items() if k != "texts"},
            "vllm": {k: v for k, v in vll.items() if k != "texts"},
            "ratio_answers": round(emb["wall_s"] / vll["wall_s"], 2),
            "ratio_with_startup": round((emb["wall_s"] + emb["startup_s"]) / (vll["wall_s"] + vll["startup_s"]), 2),
            "identical_answers": same, "compared_answers": len(vll["texts"]), "identical_by_variant": same_by_variant,
            "differing_examples": differing[:8],
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=2))
        print(f"vLLM / embedded: {summary['ratio_answers']}x faster on the answers "
              f"({summary['ratio_with_startup']}x counting start-up); identical answers {same}/{len(vll['texts'])} "
              f"{same_by_variant}")
        print(f"written: {args.output}")
    finally:
        from serving.factory import close_all

        close_all()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
