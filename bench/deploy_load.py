"""Load test of the deployed assistant on loopback: concurrent streaming clients, then clients that go away.

Starts the deploy server (embedded engine by default, or vLLM) on 127.0.0.1 in a scratch
RAGTUNE_HOME, publishes a variant, and measures first one client alone (the baseline, same
process and run) and then N concurrent streaming clients. Bounded: --requests per client and
--timeout in seconds. Prints p50/p95 latency, time to first token, throughput and failures, the
throughput ratio against the single-client baseline, and writes bench/results/deploy_load.json.

Then (``--drop``, default 3) the streams that go away: N concurrent streams of which 3 close
mid-stream, and after that burst 3 streams that all close mid-stream. For each it prints the
failures among the others, the time from each drop until the server counted it cancelled, the
time until in-flight equals the streams still open, and in-flight at the end (must be 0).

    python bench/deploy_load.py                          # tiny-llama, embedded, 32 clients
    python bench/deploy_load.py --model gemma-3-270m --max-tokens 48
    python bench/deploy_load.py --engine vllm --model gemma-3-270m
    python bench/deploy_load.py --clients 64 --requests 1 --drop 3           # the issue-14 drop test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    args = parse_args()
    # A name of its own: shared /tmp sweeps of "ragtune-*" must not pull the workspace away mid-run.
    home = tempfile.mkdtemp(prefix="deployload-")
    os.environ["RAGTUNE_HOME"] = home
    try:
        return run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--engine", choices=("embedded", "vllm"), default="embedded")
    p.add_argument("--variant", default="base", help="variant to publish (rag builds an index of datasets/sample)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    p.add_argument("--baseline-requests", type=int, default=4, help="requests of the single-client baseline")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-model-len", type=int, help="context window (tiny models: 1024)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before the run is cut short")
    p.add_argument("--drop", type=int, default=3, help="streams that close mid-stream (0: skip that phase)")
    p.add_argument("--drop-max-tokens", type=int, default=256, help="answer budget in the drop phases")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "deploy_load.json"))
    return p.parse_args()


def run(args) -> int:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from app.wiring.assistants import EngineSpec, build_engine
    from app.wiring.servers import deploy_server
    from serving.deploy.loadtest import run_drops, run_load
    from serving.deploy.server import DeployLimits
    from serving.factory import close_all

    ws, key = _published_workspace(args.variant)
    t0 = time.perf_counter()
    max_len = args.max_model_len or (1024 if args.model.startswith("tiny-") else None)
    engine = build_engine(EngineSpec(kind=args.engine, model=args.model, max_model_len=max_len))
    load_s = time.perf_counter() - t0
    # the server `ragtune deploy` runs, from the same composition root
    server = deploy_server(ws, engine, limits=DeployLimits(max_tokens=max(512, args.drop_max_tokens)))
    questions = [r["question"] for r in map(json.loads, (REPO / "datasets" / "sample_qa.jsonl").read_text().splitlines()
                                             if (REPO / "datasets" / "sample_qa.jsonl").exists() else [])
                 ] or None
    try:
        with server:
            run_load(server.url, key, clients=1, per_client=1, questions=questions, max_tokens=4, timeout_s=120)  # warm-up
            baseline = run_load(server.url, key, clients=1, per_client=args.baseline_requests, questions=questions,
                                max_tokens=args.max_tokens, timeout_s=args.timeout)
            loaded = run_load(server.url, key, clients=args.clients, per_client=args.requests, questions=questions,
                              max_tokens=args.max_tokens, timeout_s=args.timeout)
            drops = {}
            if args.drop:
                drops["during_burst"] = run_drops(server.url, key, clients=args.clients, drop=args.drop,
                                                  max_tokens=args.drop_max_tokens, timeout_s=args.timeout)
                drops["after_burst"] = run_drops(server.url, key, clients=args.drop, drop=args.drop,
                                                 max_tokens=args.drop_max_tokens, timeout_s=args.timeout)
    finally:
        close_all()
    ratio = loaded.requests_per_s / baseline.requests_per_s if baseline.requests_per_s else None
    report = {"model": args.model, "engine": args.engine, "variant": args.variant, "max_tokens": args.max_tokens,
              "cpu_count": os.cpu_count(), "engine_load_s": load_s, "baseline_1_client": baseline.to_dict(),
              "concurrent": loaded.to_dict(), "throughput_ratio_vs_1_client": ratio,
              "drops": {name: r.to_dict() for name, r in drops.items()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    _print_results(args, baseline, loaded, drops, ratio)
    drops_ok = all(r.failed == 0 and r.in_flight_end == 0 and r.dropped == args.drop for r in drops.values())
    return 0 if loaded.failed == 0 and drops_ok else 1


def _published_workspace(variant: str):
    """A scratch workspace with `variant` published (rag: datasets/sample indexed) and an API key for it."""
    from ragtune.workspace import Workspace
    from serving.deploy import deployments, keys

    ws = Workspace.create("bench")
    if variant.endswith("rag"):
        from retrieval.index import build_index
        from retrieval.ingest import ingest_paths

        ingest_paths(ws, [REPO / "datasets" / "sample"])
        build_index(ws, progress=False)
    deployments.publish(ws, variant, note="load test")
    return ws, keys.create_key(ws, "bench", 100_000)


def _line(name, r) -> str:
    return (f"{name:<14} requests {r.ok}/{r.requests} ok, failed {r.failed}, latency p50 {r.latency_p50_s or 0:.3f} s "
            f"p95 {r.latency_p95_s or 0:.3f} s, ttft p50 {r.ttft_p50_s or 0:.3f} s p95 {r.ttft_p95_s or 0:.3f} s, "
            f"{r.requests_per_s:.2f} req/s, {r.e2e_tokens_per_s:.1f} tok/s")


def _print_results(args, baseline, loaded, drops: dict, ratio) -> None:
    print(f"{args.model} on {args.engine}, variant {args.variant}, max_tokens {args.max_tokens}")
    print(_line("1 client", baseline))
    print(_line(f"{args.clients} clients", loaded))
    print(f"throughput ratio ({args.clients} clients / 1 client): {ratio:.2f}x" if ratio else "no baseline throughput")
    print(f"wrote {args.out}")
    for err in loaded.errors[:5]:
        print("error:", err)
    for name, r in drops.items():
        worst = max(r.drop_to_cancelled_s) if r.drop_to_cancelled_s else None
        print(f"drops {name:<13} {r.clients} streams, {r.dropped} dropped: others {r.ok} ok, failed {r.failed}; "
              f"drop -> counted cancelled: max {worst if worst is None else round(worst, 3)} s "
              f"({r.cancelled_counted:.0f} counted); drop -> in-flight true: "
              f"{r.drop_to_in_flight_true_s if r.drop_to_in_flight_true_s is None else round(r.drop_to_in_flight_true_s, 3)} s; "
              f"in-flight above open streams after: {r.in_flight_max_excess:.0f}; in-flight at the end: {r.in_flight_end:.0f}")
        for err in r.errors[:3]:
            print("error:", err)


if __name__ == "__main__":
    sys.exit(main())
