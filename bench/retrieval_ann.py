"""Vector search: the index ragtune picks (exact below `exact_limit`, HNSW above) against exact search.

Synthetic clustered unit vectors (dimension 384, like MiniLM) at 10k, 100k and 1M; queries are
held-out points of the same mixture. Prints p50/p95 latency per single query and recall@10 of HNSW
against exact inner-product search, measured in the same run.

    python bench/retrieval_ann.py [--sizes 10000 100000 1000000] [--queries 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def clustered(n: int, dim: int, rng, clusters: int = 1024) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim)).astype("float32")
    # Noise as large as the spread of the centres: neighbours sit at cosine ~0.5-0.7, as with text embeddings.
    x = centers[rng.integers(0, clusters, n)] + 1.0 * rng.standard_normal((n, dim)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def latencies(index, queries, k=10):
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        ids.append(i[0])
    return np.array(times) * 1000, np.array(ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import faiss

    from retrieval.index import build_faiss
    from retrieval.settings import RetrievalSettings

    faiss.omp_set_num_threads(args.threads)
    limit = RetrievalSettings().exact_limit
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        data = clustered(n + args.queries, args.dim, rng)
        base, queries = data[:n], data[n:]
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(base)
        t = time.perf_counter()
        hnsw, _ = build_faiss(base, exact_limit=0)  # force the approximate index to measure it at every size
        build_s = time.perf_counter() - t
        chosen = "hnsw" if n > limit else "flat"
        ex_ms, ex_ids = latencies(exact, queries)
        hn_ms, hn_ids = latencies(hnsw, queries)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ex_ids, hn_ids)]))
        row = {"n": n, "chosen": chosen, "exact_p50_ms": float(np.percentile(ex_ms, 50)),
               "exact_p95_ms": float(np.percentile(ex_ms, 95)), "hnsw_p50_ms": float(np.percentile(hn_ms, 50)),
               "hnsw_p95_ms": float(np.percentile(hn_ms, 95)), "hnsw_recall@10": recall, "hnsw_build_s": build_s}
        row["speedup_p50"] = row["exact_p50_ms"] / row["hnsw_p50_ms"]
        rows.append(row)
        print(f"n={n:>8d} chosen={chosen:4s} exact p50 {row['exact_p50_ms']:7.2f} ms p95 {row['exact_p95_ms']:7.2f} ms | "
              f"hnsw p50 {row['hnsw_p50_ms']:6.3f} ms p95 {row['hnsw_p95_ms']:6.3f} ms recall@10 {recall:.3f} "
              f"(build {build_s:.1f} s) | speed ratio {row['speedup_p50']:.1f}x")
        del exact, hnsw, data, base
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "retrieval_ann.json").write_text(json.dumps({"exact_limit": limit, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
