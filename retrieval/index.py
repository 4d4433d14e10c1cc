"""Build the search index of a workspace: FAISS (dense) + BM25 (sparse), written atomically.

Layout of ``<workspace>/index/current/``::

    manifest.json   version, kind, embedder, settings used, counts
    dense.faiss     FAISS index over L2-normalised vectors (inner product = cosine)
    bm25/           bm25s index
    chunks.jsonl    the chunks in index order (row i of FAISS = line i)

Re-indexing is incremental where it costs: vectors are cached per chunk text, so only new or
changed chunks are embedded; FAISS and BM25 are rebuilt from cached vectors in seconds. The new
folder replaces the old in one rename, so a reader sees either the old index or the new one.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from ragtune.atomic import atomic_directory, atomic_write_json, read_json

from .chunking import chunk_blocks
from .documents import Chunk, all_chunks, list_documents, load_blocks, open_store, replace_chunks
from .embedding import embed_cached, get_embedder
from .identity import corpus_identities, real_title
from .ingest import chunking_config, counter_for
from .settings import RetrievalSettings, load_settings

INDEX_DIR = ("index", "current")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# Past this many vectors an IVF index replaces HNSW: HNSW's build grows to 15+ min at 1M vectors on two
# cores, IVF trains k-means on a sample and builds 1M in about a minute (bench/retrieval_ann.py).
IVF_LIMIT = 500_000
IVF_TRAIN_PER_LIST = 40        # faiss wants >= 39 training points per list
IVF_TARGET_RECALL = 0.95       # nprobe is raised until recall@10 against exact search reaches this
IVF_TUNE_QUERIES = 200


def index_dir(ws):
    return ws.path(*INDEX_DIR)


def context_line(chunk: Chunk, settings: RetrievalSettings) -> str:
    """A short line naming where the chunk comes from, so 'the warranty' finds the right product's."""
    if settings.context == "none":
        return ""
    parts = [chunk.title or chunk.doc]
    if settings.context == "title+section" and chunk.section and chunk.section != chunk.title:
        parts.append(chunk.section.split(" > ")[-1])
    return " | ".join(parts)


def chunk_search_text(chunk: Chunk, settings: RetrievalSettings) -> str:
    line = context_line(chunk, settings)
    return f"{line}\n{chunk.text}" if line else chunk.text


def with_identities(ws, chunks: list[Chunk]) -> list[Chunk]:
    """The chunks with `title` set to their document's identity line (retrieval/identity.py)."""
    with ws.db() as conn:
        tables = {r["doc_id"] for r in conn.execute("SELECT doc_id FROM retrieval_documents WHERE kind IN ('csv', 'jsonl')")}
    docs = {}
    for c in chunks:
        if c.doc_id not in docs:
            blocks = [] if c.doc_id in tables else load_blocks(ws, c.doc_id)
            docs[c.doc_id] = (c.doc, real_title(c.title, c.doc), blocks)
    identity = corpus_identities(docs)
    for c in chunks:
        c.title = identity[c.doc_id]
    return chunks


def bm25_tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, lower=True, stopwords="en", show_progress=False)


def rechunk_stale(ws, settings: RetrievalSettings) -> int:
    """Re-chunk documents chunked with other settings (size, overlap or tokenizer changed)."""
    signature = settings.chunking_signature()
    with ws.db() as conn:
        stale = [r["doc_id"] for r in conn.execute("SELECT doc_id FROM retrieval_documents WHERE chunking<>?", (signature,))]
    if not stale:
        return 0
    counter = counter_for(settings)
    for doc_id in stale:
        drafts = chunk_blocks(load_blocks(ws, doc_id), counter, chunking_config(settings))
        with ws.db() as conn:
            replace_chunks(conn, doc_id, drafts, signature)
    return len(stale)


def build_faiss(vectors: np.ndarray, exact_limit: int, ivf_limit: int = IVF_LIMIT):
    """Exact search up to `exact_limit` vectors, HNSW up to `ivf_limit`, IVF (nprobe tuned) above."""
    import faiss

    n, dim = vectors.shape
    if n <= exact_limit:
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    elif n <= ivf_limit:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        kind = "hnsw"
    else:
        return build_ivf(vectors), "ivf"
    if n:
        index.add(vectors)
    return index, kind


def build_ivf(vectors: np.ndarray, seed: int = 0):
    """IVF-Flat with about 4*sqrt(N) lists, k-means trained on a sample; nprobe is stored in the index."""
    import faiss

    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype="float32")
    nlist = max(1, min(int(4 * np.sqrt(n)), n // IVF_TRAIN_PER_LIST))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, size=min(n, nlist * IVF_TRAIN_PER_LIST), replace=False))]
    index.cp.seed = seed
    index.train(sample)
    index.add(vectors)
    index.nprobe = tune_nprobe(index, vectors, rng)
    return index


def tune_nprobe(index, vectors: np.ndarray, rng, k: int = 10) -> int:
    """Smallest power-of-two nprobe whose recall@k (stored vectors as queries, themselves left out) is high enough."""
    import faiss

    n = len(vectors)
    queries_at = rng.choice(n, size=min(n, IVF_TUNE_QUERIES), replace=False)
    queries = vectors[queries_at]
    _, truth = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)

    def neighbours(rows, own):
        return [set(r[r != i][:k].tolist()) for r, i in zip(rows, own)]

    want = neighbours(truth, queries_at)
    nprobe = 1
    while True:
        index.nprobe = nprobe
        _, got = index.search(queries, k + 1)
        recall = np.mean([len(w & g) / max(1, len(w)) for w, g in zip(want, neighbours(got, queries_at))])
        if recall >= IVF_TARGET_RECALL or nprobe >= index.nlist:
            return nprobe
        nprobe = min(nprobe * 2, index.nlist)


def build_index(ws, *, progress=True, settings: RetrievalSettings | None = None,
                tuning_rows: list[dict] | None = None) -> dict:
    """(Re)build the index from the workspace's documents; returns {"version", "chunks", "embedded", "kind", "tuned"}.

    With ``settings.tune`` the fusion is chosen on `tuning_rows` (rows {"question", "gold": [(doc, page)]},
    e.g. a user's gold set), else on the workspace's held-out generated questions, else on questions
    made from the corpus (retrieval/tuning.py), and stored in the manifest. ``progress``: a bar, nothing,
    or ``progress(done, total, label)`` (``ragtune.operations``), which may raise to stop the build: the
    current index stays as it was and every vector embedded so far is kept for the next build.
    """
    open_store(ws)
    settings = settings or load_settings(ws)
    rechunk_stale(ws, settings)
    chunks = all_chunks(ws)
    if settings.identity:
        chunks = with_identities(ws, chunks)
    texts = [chunk_search_text(c, settings) for c in chunks]
    fingerprint = _fingerprint(settings, chunks, texts)
    version = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    report = progress if callable(progress) else (lambda *_: None)
    current = read_json(index_dir(ws) / "manifest.json")
    if current and current.get("version") == version and not tuning_rows:
        tuned = _tuned_again_on_new_evidence(ws, current, settings, chunks, report)
        return {"version": version, "chunks": len(chunks), "embedded": 0, "kind": current["kind"], "unchanged": True,
                "tuned": tuned}

    embedder = get_embedder(settings.embedder)
    stats: dict = {}
    vectors, embedded = embed_cached(ws, embedder, texts, batch_size=settings.batch_size, progress=progress,
                                     stats=stats)
    report(len(texts), len(texts), "building the search index")
    index, kind = build_faiss(vectors, settings.exact_limit, IVF_LIMIT)
    manifest = {
        "version": version, "kind": kind, "chunks": len(chunks), "embedded": embedded,
        "embedder": settings.embedder, "dim": int(vectors.shape[1]) if len(vectors) else embedder.dim,
        "documents": len({c.doc_id for c in chunks}), "context": settings.context,
        "built_at": time.time(), "fingerprint": fingerprint,
    }
    _write_index(ws, index, chunks, texts, manifest, settings, tuning_rows, report)
    return {"version": version, "chunks": len(chunks), "embedded": embedded, "kind": kind,
            "computed": stats.get("computed", 0), "tuned": manifest.get("tuned")}


def _fingerprint(settings: RetrievalSettings, chunks: list[Chunk], texts: list[str]) -> dict:
    """What the index is built from: an index with the same fingerprint needs no rebuild."""
    return {
        "embedder": settings.embedder, "context": settings.context, "exact_limit": settings.exact_limit,
        "ivf_limit": IVF_LIMIT, "tune": settings.tune,
        "chunks": hashlib.sha256("\n".join(c.chunk_id for c in chunks).encode()).hexdigest(),
        "texts": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
    }


def _tuned_again_on_new_evidence(ws, manifest: dict, settings: RetrievalSettings, chunks: list[Chunk],
                                 report) -> dict | None:
    """An unchanged index's fusion choice, made again (same vectors) when there is new evidence since the
    build (answers rated up, a new generated set). A choice made on the user's own questions (--qa)
    stands until they give others."""
    tuned = manifest.get("tuned")
    if settings.tune and chunks and (tuned or {}).get("evidence_key") not in ("given", evidence_key(ws)):
        report(len(chunks), len(chunks), "choosing the fusion for this corpus")
        manifest["tuned"] = tuned = choose_fusion(ws, index_dir(ws), manifest, settings, chunks, None)
        atomic_write_json(index_dir(ws) / "manifest.json", manifest)
    return tuned


def _write_index(ws, index, chunks: list[Chunk], texts: list[str], manifest: dict, settings: RetrievalSettings,
                 tuning_rows: list[dict] | None, report) -> None:
    """The index's files in a new folder that replaces the current one in one rename; with
    ``settings.tune``, the fusion is chosen on the new index first and goes in its manifest."""
    import bm25s
    import faiss

    with atomic_directory(index_dir(ws)) as tmp:
        faiss.write_index(index, str(tmp / "dense.faiss"))
        if chunks:
            bm25 = bm25s.BM25()
            bm25.index(bm25_tokenize(texts), show_progress=False)
            bm25.save(str(tmp / "bm25"))
        (tmp / "chunks.jsonl").write_text(
            "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in chunks), encoding="utf-8")
        if settings.tune and chunks:
            report(len(texts), len(texts), "choosing the fusion for this corpus")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            manifest["tuned"] = choose_fusion(ws, tmp, manifest, settings, chunks, tuning_rows)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def choose_fusion(ws, folder, manifest: dict, settings: RetrievalSettings, chunks: list[Chunk],
                  tuning_rows: list[dict] | None) -> dict:
    """The fusion for this corpus (retrieval/tuning.py): chosen on a user's questions; on generated
    questions only when they are worded like people's; otherwise the defaults, with the reason."""
    # here, not at the top: search (and tuning, through it) imports this module
    from .search import Retriever
    from .tuning import (PARAPHRASE_MAX_OVERLAP, asked_questions, held_out_questions, made_questions, tune_fusion,
                         wording_overlap)

    retriever = Retriever(folder, manifest, settings)
    key = evidence_key(ws)
    if tuning_rows:
        return {**tune_fusion(retriever, tuning_rows, "of your questions", evidence=True), "evidence_key": "given"}
    if rows := asked_questions(ws):
        tuned = tune_fusion(retriever, rows, "questions people asked and rated up", evidence=True)
    elif rows := held_out_questions(ws):
        overlap = wording_overlap(rows, chunks)
        paraphrased = overlap is not None and overlap <= PARAPHRASE_MAX_OVERLAP
        tuned = tune_fusion(retriever, rows, "held-out generated questions", evidence=paraphrased)
    else:
        tuned = tune_fusion(retriever, made_questions(chunks), "questions made from the corpus's sentences",
                            evidence=False)
    return {**tuned, "evidence_key": key}


def evidence_key(ws) -> str:
    """What the fusion choice rests on, in one string: it changes when end users rate answers up or a new
    generated Q&A set appears, and an unchanged index is then tuned again."""
    from .tuning import asked_questions, newest_generated_set  # not at the top: tuning imports search, search this

    newest = newest_generated_set(ws)
    return f"asked:{len(asked_questions(ws))}|generated:{newest.parent.name if newest else ''}"


def index_status(ws) -> dict | None:
    return read_json(index_dir(ws) / "manifest.json")


def index_state(ws) -> dict:
    """Whether the index exists and still covers the workspace's documents (the rule every screen shows).

    Stale when documents were added or deleted since the build: the chunk ids it was built from
    differ from the workspace's now. Returns {"built", "stale", "documents", "manifest"}.
    """
    manifest = index_status(ws)
    documents = len(list_documents(ws))
    if not manifest:
        return {"built": False, "stale": documents > 0, "documents": documents, "manifest": None}
    built_from = (manifest.get("fingerprint") or {}).get("chunks")
    if built_from is not None:
        chunk_ids = "\n".join(c.chunk_id for c in all_chunks(ws))
        stale = hashlib.sha256(chunk_ids.encode()).hexdigest() != built_from
    else:  # an index from before fingerprints: compare the document count
        stale = manifest.get("documents") is not None and manifest["documents"] != documents
    return {"built": True, "stale": stale, "documents": documents, "manifest": manifest}
