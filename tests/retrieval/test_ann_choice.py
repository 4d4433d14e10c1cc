"""The index kind follows the vector count (flat, HNSW, IVF) and an IVF index reloads exactly."""

from __future__ import annotations

import faiss
import numpy as np

import retrieval.index as index_module
from retrieval.index import build_faiss, build_index
from retrieval.ingest import ingest_paths
from retrieval.search import Retriever
from retrieval.settings import save_settings


def _unit_vectors(n, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, dim)).astype("float32")
    x = centers[rng.integers(0, 16, n)] + 0.5 * rng.standard_normal((n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kind_follows_the_vector_count():
    vectors = _unit_vectors(3000)
    assert build_faiss(vectors[:100], exact_limit=100, ivf_limit=1000)[1] == "flat"
    assert build_faiss(vectors[:1000], exact_limit=100, ivf_limit=1000)[1] == "hnsw"
    index, kind = build_faiss(vectors, exact_limit=100, ivf_limit=1000)
    assert kind == "ivf" and isinstance(index, faiss.IndexIVFFlat)
    assert index.ntotal == 3000 and 1 <= index.nprobe <= index.nlist


def test_ivf_nprobe_is_tuned_to_the_recall_target():
    vectors = _unit_vectors(4000, seed=1)
    index, _ = build_faiss(vectors[:3800], exact_limit=0, ivf_limit=0)
    queries = vectors[3800:]
    want = faiss.knn(queries, vectors[:3800], 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    got = index.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)])
    assert recall >= 0.95, (recall, index.nprobe, index.nlist)


def test_ivf_round_trips_through_save_and_load(tmp_path):
    vectors = _unit_vectors(3000, seed=2)
    index, _ = build_faiss(vectors, exact_limit=0, ivf_limit=0)
    path = tmp_path / "dense.faiss"
    faiss.write_index(index, str(path))
    loaded = faiss.read_index(str(path))
    assert loaded.nprobe == index.nprobe and loaded.nlist == index.nlist
    queries = _unit_vectors(50, seed=3)
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])


def test_workspace_index_is_ivf_past_the_limit_and_reloads(workspace, sample_docs, monkeypatch):
    monkeypatch.setattr(index_module, "IVF_LIMIT", 0)
    ingest_paths(workspace, [sample_docs])
    save_settings(workspace, exact_limit=0)
    built = build_index(workspace, progress=False)
    assert built["kind"] == "ivf"
    first, again = Retriever.for_workspace(workspace), Retriever.for_workspace(workspace)
    assert first.kind == "ivf" and isinstance(first.dense, faiss.IndexIVFFlat)
    vectors = first.dense.reconstruct_n(0, first.dense.ntotal)
    for q in ("error code E-214", "per diem in Rotterdam", "password length"):
        query = first.embedder.encode([q])
        want = faiss.knn(query, vectors, 5, metric=faiss.METRIC_INNER_PRODUCT)[1][0].tolist()
        got = [i for i, _ in first.dense_search(q, 5)]
        assert got == [i for i, _ in again.dense_search(q, 5)]
        assert got == want  # under 80 chunks (73 today) IVF has one list, so its search is exact
