"""Output tokens/s of vLLM against the embedded engine, at 1 and 8 concurrent requests, in one run.

    python bench/serving_throughput.py                     # Gemma 3 270M, 64 tokens per answer
    python bench/serving_throughput.py --model tiny-llama --max-tokens 32 --requests 8

Both engines serve the same model in the same dtype (float32 on CPU) and answer the same questions
greedily, so they produce the same tokens; the ratio is vLLM's tokens/s over the embedded engine's.
The embedded engine runs on one torch thread (two collapse on 2-core machines); vLLM on CPU binds
its own OpenMP threads (VLLM_CPU_OMP_THREADS_BIND=auto). Rounds alternate engines to share the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from serving.engine import SamplingOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "datasets" / "sample_qa.jsonl").read_text().splitlines() if line.strip()]
    return [rows[i % len(rows)]["question"] for i in range(n)]


def run(engine, prompts: list[str], concurrency: int, options: SamplingOptions) -> dict:
    def one(q):
        return engine.generate([{"role": "user", "content": q}], options)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        gens = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    tokens = sum(g.completion_tokens for g in gens)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "mean_ttft_s": statistics.mean(g.ttft_s for g in gens if g.ttft_s is not None),
            "texts": [g.text for g in gens]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8, help="requests per measurement (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", help="an already running vLLM server to use instead of starting one")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "serving_throughput.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from serving.embedded import EmbeddedEngine
    from serving.vllm_engine import VLLMEngine, VLLMServer

    print(f"starting vLLM ({args.model}) ...", flush=True)
    t0 = time.perf_counter()
    server = None
    if args.url:
        vllm = VLLMEngine(args.url)
    else:
        server = VLLMServer(args.model, max_model_len=1024, kv_cache_gib=args.kv_cache_gib, enable_lora=False,
                            watch=False)
        vllm = VLLMEngine(server.start())
    startup = time.perf_counter() - t0
    embedded = EmbeddedEngine(args.model)
    options = SamplingOptions(max_tokens=args.max_tokens)
    prompts = questions(args.requests)
    # Warm both (first calls allocate caches).
    vllm.generate([{"role": "user", "content": "Hello"}], SamplingOptions(max_tokens=4))
    embedded.generate([{"role": "user", "content": "Hello"}], SamplingOptions(max_tokens=4))

    results: dict = {}
    try:
        for concurrency in args.concurrency:
            for name, engine in (("vllm", vllm), ("embedded", embedded)):
                results.setdefault(str(concurrency), {})[name] = []
            for r in range(args.rounds):
                order = (("vllm", vllm), ("embedded", embedded)) if r % 2 == 0 else (("embedded", embedded), ("vllm", vllm))
                for name, engine in order:
                    m = run(engine, prompts, concurrency, options)
                    results[str(concurrency)][name].append(m)
                    print(f"  concurrency {concurrency:>2}  {name:<8}  {m['tokens']:>4} tokens in {m['wall_s']:6.1f} s"
                          f" = {m['tokens_per_s']:6.1f} tok/s  (mean TTFT {m['mean_ttft_s']:.2f} s)", flush=True)
    finally:
        vllm.close()
        if server is not None:
            server.stop()

    summary = {}
    print(f"\n{args.model}, {args.max_tokens} tokens per answer, {args.requests} requests, vLLM start {startup:.0f} s")
    print(f"{'concurrent':>10}  {'vLLM tok/s':>10}  {'embedded tok/s':>14}  {'vLLM / embedded':>15}  same text")
    for concurrency, by_engine in results.items():
        v = statistics.median(m["tokens_per_s"] for m in by_engine["vllm"])
        e = statistics.median(m["tokens_per_s"] for m in by_engine["embedded"])
        same = all(a["texts"] == b["texts"] for a, b in zip(by_engine["vllm"], by_engine["embedded"]))
        summary[concurrency] = {"vllm_tokens_per_s": v, "embedded_tokens_per_s": e, "ratio": v / e, "same_text": same}
        print(f"{concurrency:>10}  {v:10.1f}  {e:14.1f}  {v / e:14.2f}x  {same}")

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "max_tokens": args.max_tokens, "requests": args.requests,
                               "vllm_startup_s": startup, "machine": {"cpus": os.cpu_count(),
                                                                      "platform": platform.platform()},
                               "summary": summary,
                               "runs": {c: {n: [{k: v for k, v in m.items() if k != "texts"} for m in ms]
                                            for n, ms in by.items()} for c, by in results.items()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
