"""Sentence-transformers embeddings in batches, cached per workspace by (model, text hash)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ragtune.errors import ModelNotFoundError
from ragtune.models import resolve_embedder
from ragtune.paths import cache_dir
from ragtune.progress import progress_bar

_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device="cpu")
    except Exception as exc:  # missing weights, wrong folder
        raise ModelNotFoundError(f"Cannot load the embedding model at {path}: {type(exc).__name__}: {exc}") from None


class Embedder:
    """One embedding model; ``encode`` returns L2-normalised float32 rows (inner product = cosine)."""

    def __init__(self, name: str):
        self.name = name
        self.path: Path = resolve_embedder(name).path
        self._model = None

    @property
    def model(self):
        if self._model is None:
            with _lock:
                self._model = _load(str(self.path))
        return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length or 512)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        vectors = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                    convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vectors, dtype="float32")


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
    return Embedder(name)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class SharedCache:
    """Vectors shared by all workspaces of this machine (under RAGTUNE_CACHE), keyed like the workspace cache.

    Re-ingesting the same documents elsewhere (an evaluation's temporary workspace, a copy of a
    project) then costs no embedding at all. It is only a cache: deleting it loses nothing.
    """

    def __init__(self, embedder: "Embedder"):
        model_id = hashlib.sha256(f"{embedder.name}\0{embedder.path}".encode()).hexdigest()[:16]
        self.path = cache_dir() / "embeddings" / f"{model_id}.sqlite3"

    def _connect(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        return conn

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        found = {}
        try:
            conn = self._connect()
        except Exception:  # an unwritable cache folder must not stop indexing
            return found
        with conn:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                rows = conn.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                found.update((k, np.frombuffer(v, dtype="float32")) for k, v in rows)
        conn.close()
        return found

    def put(self, items: list[tuple[str, np.ndarray]]) -> None:
        try:
            conn = self._connect()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", [(k, v.tobytes()) for k, v in items])
            conn.close()
        except Exception:
            pass


def embed_cached(ws, embedder: Embedder, texts: list[str], *, batch_size: int = 64, progress=True,
                 shared: bool = True, stats: dict | None = None) -> tuple[np.ndarray, int]:
    """Vectors for `texts`; returns (matrix, how many were new to this workspace's cache).

    Looks in the workspace's cache, then in the machine-wide one, and runs the model only for the
    rest (their number goes to ``stats["computed"]``); new vectors go to both caches, a batch at a
    time, so an interrupted build keeps what it embedded. ``progress``: a bar (True), nothing
    (False) or ``progress(done, total, label)`` called before each batch (it may raise to stop).
    """
    keys = [text_key(t) for t in texts]
    wanted = sorted(set(keys))
    found = _from_workspace(ws, embedder, wanted)
    in_workspace = len(found)
    machine = SharedCache(embedder) if shared else None
    if machine is not None and len(found) < len(wanted):
        found.update(_from_machine(ws, embedder, machine, [k for k in wanted if k not in found]))
    missing = {}
    for k, t in zip(keys, texts):
        if k not in found and k not in missing:
            missing[k] = t
    if missing:
        found.update(_embed_missing(ws, embedder, missing, machine, batch_size, progress))
    dim = next(iter(found.values())).shape[0] if found else embedder.dim
    matrix = np.zeros((len(texts), dim), dtype="float32")
    for i, k in enumerate(keys):
        matrix[i] = found[k]
    if stats is not None:
        stats["computed"] = len(missing)
    return matrix, len(wanted) - in_workspace


def _from_workspace(ws, embedder: Embedder, keys: list[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with ws.db() as conn:
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            marks = ",".join("?" * len(part))
            for row in conn.execute(f"SELECT key, vector FROM retrieval_embeddings WHERE model=? AND key IN ({marks})",
                                    (embedder.name, *part)):
                found[row["key"]] = np.frombuffer(row["vector"], dtype="float32")
    return found


def _from_machine(ws, embedder: Embedder, machine: SharedCache, keys: list[str]) -> dict[str, np.ndarray]:
    """The vectors of `keys` the machine-wide cache holds, copied into the workspace's."""
    found = machine.get(keys)
    if found:
        with ws.db() as conn:
            conn.executemany("INSERT OR REPLACE INTO retrieval_embeddings VALUES (?, ?, ?)",
                             [(embedder.name, k, v.tobytes()) for k, v in found.items()])
    return found


def _embed_missing(ws, embedder: Embedder, missing: dict[str, str], machine: SharedCache | None, batch_size: int,
                   progress) -> dict[str, np.ndarray]:
    """The model's vectors for `missing` (key -> text), stored in the caches a batch at a time."""
    found: dict[str, np.ndarray] = {}
    todo_keys, todo_texts = list(missing), list(missing.values())
    report = progress if callable(progress) else None
    bar = progress_bar(total=len(todo_texts), desc="embedding chunks", unit="chunk",
                       disable=not progress or report is not None)
    step = max(batch_size * 4, 256)
    for i in range(0, len(todo_texts), step):
        if report:
            report(i, len(todo_texts), "embedding chunks")  # may raise to cancel: what is stored stays
        vecs = embedder.encode(todo_texts[i:i + step], batch_size=batch_size)
        with ws.db() as conn:
            conn.executemany("INSERT OR REPLACE INTO retrieval_embeddings VALUES (?, ?, ?)",
                             [(embedder.name, k, v.tobytes()) for k, v in zip(todo_keys[i:i + step], vecs)])
        found.update(zip(todo_keys[i:i + step], vecs))
        if machine is not None:
            machine.put(list(zip(todo_keys[i:i + step], vecs)))
        bar.update(len(vecs))
    bar.close()
    if report:
        report(len(todo_texts), len(todo_texts), "embedding chunks")
    return found
