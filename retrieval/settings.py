"""Retrieval settings of a workspace (setting key "retrieval"), with defaults measured on the shared corpora."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from ragtune.errors import BadInputError
from ragtune.models import DEFAULT_EMBEDDER

SETTING_KEY = "retrieval"
MODES = ("hybrid", "dense", "bm25")


@dataclass
class RetrievalSettings:
    embedder: str = DEFAULT_EMBEDDER
    chunk_tokens: int = 200        # in the embedder's tokens, title line excluded
    overlap_tokens: int = 40
    min_chunk_tokens: int = 50     # a piece shorter than this joins its neighbours (no address-line chunks)
    strip_repeats: bool = True     # drop running page headers and footers of PDFs (at ingest)
    # Ruled PDF tables read by pdfplumber, a row per line with its headers (at ingest). Off by default: on the
    # gold sets it moved no document or page hit, cost NTSB 4 of 39 answers' values in the top 3, and parsed
    # pages with lines ~20x slower (docs/retrieval.md).
    pdf_tables: bool = False
    identity: bool = True          # each chunk's context line names its document (see retrieval/identity.py)
    tune: bool = True              # fusion weights, RRF k and k chosen per corpus when the index is built
    context: str = "title"         # what is prepended to each chunk for embedding and BM25: none | title | title+section
    query_prefix: str = ""         # e.g. "Represent this sentence for searching relevant passages: " for bge
    k: int = 5
    mode: str = "hybrid"
    rrf_k: int = 60
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    candidates: int = 50           # per retriever, before fusion
    doc_boost: float = 0.0         # share of the other fused scores of a chunk's document added to it
    page_boost: float = 0.0        # same for the chunk's page
    title_weight: float = 1.0      # weight of the "query names this document's title" ranking in RRF
    title_min_score: float = 1.5   # summed log((N+1)/df) of the title words named; below it nothing is routed
    title_margin: float = 0.5      # ... and the best document must lead the next by this much (one rare word)
    boost_depth: int = 10          # how many top fused chunks share their score
    exact_limit: int = 50_000      # above this many vectors HNSW replaces exact search (bench/retrieval_ann.py)
    reranker: str | None = None    # a cross-encoder folder or id; None = no re-ranking
    batch_size: int = 64
    worked_example: bool = False   # one answered field of another document: Gemma 270M copied its answer (NTSB run)

    def chunking_signature(self) -> str:
        key = {"embedder": self.embedder, "chunk": self.chunk_tokens, "overlap": self.overlap_tokens,
               "min": self.min_chunk_tokens}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def load_settings(ws, **overrides) -> RetrievalSettings:
    stored = ws.get_setting(SETTING_KEY, {}) or {}
    known = {f.name for f in fields(RetrievalSettings)}
    values = {k: v for k, v in {**stored, **overrides}.items() if k in known and v is not None}
    settings = RetrievalSettings(**values)
    if settings.mode not in MODES:
        raise BadInputError(f"Unknown retrieval mode '{settings.mode}': use one of {', '.join(MODES)}.")
    if settings.chunk_tokens < 16 or settings.overlap_tokens < 0 or settings.overlap_tokens * 2 > settings.chunk_tokens:
        raise BadInputError("Chunk size must be at least 16 tokens and the overlap at most half of it.")
    return settings


def save_settings(ws, **changes) -> RetrievalSettings:
    settings = load_settings(ws, **changes)
    ws.set_setting(SETTING_KEY, asdict(settings))
    return settings
