"""Embedding throughput: ragtune's cached, batched indexing path against a bare SentenceTransformer.encode.

Both embed the same chunk texts (the contoso-manuals corpus, chunked by ragtune) with the same model,
batch size and thread count; the ratio shows ragtune's overhead (hashing, cache reads/writes in
SQLite, progress bar). A second ragtune pass shows the cache: nothing is re-embedded.

    python bench/retrieval_embed.py [--threads 1] [--limit 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CORPUS = REPO.parent / "shared" / "corpora" / "contoso-manuals" / "docs_nofaq"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=300, help="chunks to embed")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ragtune.workspace import Workspace
    from retrieval.embedding import embed_cached, get_embedder
    from retrieval.index import chunk_search_text
    from retrieval.documents import all_chunks
    from retrieval.ingest import ingest_paths
    from retrieval.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create("bench", root=Path(tmp))
        ingest_paths(ws, [CORPUS])
        settings = load_settings(ws)
        texts = [chunk_search_text(c, settings) for c in all_chunks(ws)][: args.limit]
        embedder = get_embedder(settings.embedder)
        model = embedder.model
        model.encode(texts[:8])  # warm-up: first call allocates
        # Interleave the two to share the machine's noise.
        bare_times, ours_times = [], []
        for round_ in range(3):
            t = time.perf_counter()
            model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)
            bare_times.append(time.perf_counter() - t)
            ws_round = Workspace.create(f"bench{round_}", root=Path(tmp))
            from retrieval.documents import open_store

            open_store(ws_round)
            t = time.perf_counter()
            _, computed = embed_cached(ws_round, embedder, texts, batch_size=args.batch_size, progress=False,
                                       shared=False)
            ours_times.append(time.perf_counter() - t)
            assert computed == len(set(texts))
        t = time.perf_counter()
        _, again = embed_cached(ws_round, embedder, texts, batch_size=args.batch_size, progress=False, shared=False)
        cached_s = time.perf_counter() - t
    bare, ours = min(bare_times), min(ours_times)
    n = len(texts)
    overhead = ours / bare - 1
    print(f"{n} chunks, {args.threads} thread(s), batch {args.batch_size}")
    print(f"bare SentenceTransformer.encode: {n / bare:8.1f} chunks/s")
    print(f"ragtune embed_cached (cold):     {n / ours:8.1f} chunks/s   ratio {bare / ours:.3f} (overhead {overhead:+.1%})")
    print(f"ragtune embed_cached (cached):   {n / cached_s:8.1f} chunks/s   re-embedded {again}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "retrieval_embed.json").write_text(json.dumps(
        {"chunks": n, "bare_chunks_per_s": n / bare, "ragtune_chunks_per_s": n / ours, "overhead": overhead,
         "cached_chunks_per_s": n / cached_s}, indent=2))


if __name__ == "__main__":
    main()
