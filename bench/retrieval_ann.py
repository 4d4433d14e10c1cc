"""Vector search: the index ragtune picks against exact search.

The chooser (retrieval.index.build_faiss) keeps exact search up to `exact_limit` vectors, HNSW up to
IVF_LIMIT, IVF-Flat (nprobe tuned to recall@10 >= 0.95) above. Synthetic clustered unit vectors
(dimension 384, like MiniLM) at 10k, 100k and 1M; queries are held-out points of the same mixture.
Prints p50/p95 latency per single query and recall@10 of the approximate index against exact
inner-product search, measured in the same run. At sizes where exact search is chosen, HNSW is
measured instead, to show what it would cost; --kind forces one approximate kind at every size.

    python bench/retrieval_ann.py [--sizes 10000,100000,1000000] [--queries 200] [--threads 1] [--kind hnsw|ivf]
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
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated vector counts")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kind", choices=["hnsw", "ivf"], help="measure this approximate kind at every size")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "retrieval_ann.json"))
    args = ap.parse_args()
    import faiss

    from retrieval.index import IVF_LIMIT, build_faiss
    from retrieval.settings import RetrievalSettings

    faiss.omp_set_num_threads(args.threads)
    limit = RetrievalSettings().exact_limit
    rng = np.random.default_rng(0)
    rows = []
    for n in [int(x) for x in args.sizes.replace(" ", ",").split(",") if x]:
        data = clustered(n + args.queries, args.dim, rng)
        base, queries = data[:n], data[n:]
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(base)
        chosen = "flat" if n <= limit else "hnsw" if n <= IVF_LIMIT else "ivf"
        measured = args.kind or ("hnsw" if chosen == "flat" else chosen)
        # Limits that force the measured kind; the build itself goes through the chooser.
        exact_limit, ivf_limit = (0, n) if measured == "hnsw" else (0, 0)
        t = time.perf_counter()
        ann, kind = build_faiss(base, exact_limit=exact_limit, ivf_limit=ivf_limit)
        build_s = time.perf_counter() - t
        assert kind == measured
        ex_ms, ex_ids = latencies(exact, queries)
        an_ms, an_ids = latencies(ann, queries)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ex_ids, an_ids)]))
        row = {"n": n, "chosen": chosen, "measured": measured,
               "exact_p50_ms": float(np.percentile(ex_ms, 50)), "exact_p95_ms": float(np.percentile(ex_ms, 95)),
               "ann_p50_ms": float(np.percentile(an_ms, 50)), "ann_p95_ms": float(np.percentile(an_ms, 95)),
               "recall@10": recall, "build_s": build_s}
        if measured == "ivf":
            row.update(nlist=int(ann.nlist), nprobe=int(ann.nprobe))
        row["speedup_p50"] = row["exact_p50_ms"] / row["ann_p50_ms"]
        rows.append(row)
        extra = f" nlist {ann.nlist} nprobe {ann.nprobe}" if measured == "ivf" else ""
        print(f"n={n:>8d} chosen={chosen:4s} exact p50 {row['exact_p50_ms']:7.2f} ms p95 {row['exact_p95_ms']:7.2f} ms | "
              f"{measured} p50 {row['ann_p50_ms']:6.3f} ms p95 {row['ann_p95_ms']:6.3f} ms recall@10 {recall:.3f} "
              f"(build {build_s:.1f} s{extra}) | speed ratio {row['speedup_p50']:.1f}x", flush=True)
        del exact, ann, data, base
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"exact_limit": limit, "ivf_limit": IVF_LIMIT, "threads": args.threads,
                               "queries": args.queries, "rows": rows}, indent=2))

if __name__ == "__main__":
    main()
