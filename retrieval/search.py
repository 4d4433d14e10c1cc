"""Query the index: dense (FAISS), sparse (BM25) or both fused by reciprocal rank fusion."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from ragtune.atomic import read_json
from ragtune.errors import BadInputError
from ragtune.models import resolve_embedder

from .documents import Chunk
from .embedding import get_embedder
from .index import bm25_tokenize, index_dir
from .prompt import WorkedExample, example_from_text
from .settings import MODES, RetrievalSettings, load_settings


@dataclass
class Passage:
    chunk_id: str
    doc: str
    page: int | None
    section: str | None
    text: str
    score: float
    doc_id: str | None = None
    ranks: dict = field(default_factory=dict)  # rank per retriever (1-based), for explanations

    @property
    def citation(self) -> str:
        return f"{self.doc}#page={self.page}" if self.page else self.doc

    def to_dict(self) -> dict:
        d = asdict(self)
        d["citation"] = self.citation
        return d


def normalize_query(query: str) -> str:
    """Spell file names as words ("Plan_Details.pdf" -> "Plan Details") so both retrievers can match titles."""
    query = re.sub(r"\b([\w-]+)\.(pdf|docx?|pptx?|html?|md|txt|csv|jsonl|eml|rtf)\b", r"\1", query, flags=re.I)
    return " ".join(query.replace("_", " ").split())


_WORD = re.compile(r"[a-z0-9]{2,}")
_STOP = frozenset("the and for with are what how does this that from your you can is of in to on at by an or be".split())


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower().replace("_", " ")) if w not in _STOP]


_TOKEN = re.compile(r"[A-Za-z0-9][\w'’-]*")


def _name_words(title: str) -> str:
    """The words of a title or identity line that name something: capitalised words, codes and numbers.

    An identity line may hold a sentence ("Answers to the questions our teams hear most often");
    its lower-case words are topics other documents share, and must not route a question.
    """
    return " ".join(t for t in _TOKEN.findall(title) if t[0].isupper() or t[0].isdigit())


def rrf_fuse(rankings: dict[str, list[int]], weights: dict[str, float], k: int = 60) -> list[tuple[int, float, dict]]:
    """Reciprocal rank fusion: score(d) = sum_r w_r / (k + rank_r(d))."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict] = {}
    for name, ids in rankings.items():
        w = weights.get(name, 1.0)
        for rank, doc in enumerate(ids, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            ranks.setdefault(doc, {})[name] = rank
    order = sorted(scores, key=lambda d: -scores[d])
    return [(d, scores[d], ranks[d]) for d in order]


_cache: dict[str, "Retriever"] = {}
_cache_lock = threading.Lock()


def forget_workspace(ws) -> None:
    """Drop the cached retriever of a workspace that was renamed or deleted."""
    folder = str(index_dir(ws))
    with _cache_lock:
        for old in [k for k in _cache if k.startswith(f"{folder}:")]:
            del _cache[old]


class Retriever:
    def __init__(self, folder, manifest: dict, settings: RetrievalSettings):
        import faiss

        self.folder = folder
        self.manifest = manifest
        self.settings = settings
        self.version: str = manifest["version"]
        self.kind: str = manifest["kind"]
        with open(folder / "chunks.jsonl", encoding="utf-8") as f:
            self.chunks = [Chunk(**json.loads(line)) for line in f if line.strip()]
        self.dense = faiss.read_index(str(folder / "dense.faiss"))
        if hasattr(self.dense, "hnsw"):
            self.dense.hnsw.efSearch = max(self.dense.hnsw.efSearch, 128)
        self.bm25 = None
        if self.chunks:
            import bm25s

            self.bm25 = bm25s.BM25.load(str(folder / "bm25"))
        self.embedder = get_embedder(manifest["embedder"])
        self._reranker = None
        self._title_terms = self._document_title_terms()
        self._examples: dict | None = None
        tuned = (manifest.get("tuned") or {}).get("settings") or {}
        self.answer_k: int | None = tuned.get("k") if settings.tune else None  # passages per answer

    @classmethod
    def for_workspace(cls, ws, **overrides) -> "Retriever":
        folder = index_dir(ws)
        manifest = read_json(folder / "manifest.json")
        if manifest is None:
            raise BadInputError(
                f"Workspace '{ws.name}' has no search index yet: add documents with `ragtune ingest PATH` "
                "(or the Documents tab), then build the index with `ragtune index`.")
        settings = load_settings(ws, **overrides)
        tuned = (manifest.get("tuned") or {}).get("settings") or {}
        if settings.tune and tuned:  # the fusion chosen for this corpus when the index was built
            settings = load_settings(ws, **{**tuned, **overrides})
        key = f"{folder}:{manifest['version']}:{json.dumps(overrides, sort_keys=True, default=str)}"
        with _cache_lock:
            cached = _cache.get(key)
            if cached is None or cached.settings != settings:
                for old in [k for k in _cache if k.startswith(f"{folder}:")]:
                    del _cache[old]
                cached = _cache[key] = cls(folder, manifest, settings)
        return cached

    # ------------------------------------------------------------ single retrievers
    def dense_search(self, query: str, n: int) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        vec = self.embedder.encode([self.settings.query_prefix + query])
        scores, ids = self.dense.search(vec, min(n, len(self.chunks)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def bm25_search(self, query: str, n: int) -> list[tuple[int, float]]:
        if self.bm25 is None:
            return []
        tokens = bm25_tokenize([query])
        if not tokens.vocab:
            return []
        # Words not in the corpus vocabulary carry no BM25 signal; drop them rather than fail.
        vocab = self.bm25.vocab_dict
        inv = {v: k for k, v in tokens.vocab.items()}
        words = [inv[t] for t in tokens.ids[0] if inv[t] in vocab]
        if not words:
            return []
        ids, scores = self.bm25.retrieve([words], k=min(n, len(self.chunks)), show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def _document_title_terms(self) -> dict[str, dict[str, float]]:
        """Per document, the words of its title line, weighted by how few documents use them anywhere.

        A word of one title that other documents also use in their text ("K7" in a K7 manual,
        a FAQ and a parts list) names a topic, not a document, and weighs little.
        """
        titles: dict[str, str] = {}
        used: dict[str, set] = {}
        for c in self.chunks:
            titles.setdefault(c.doc_id, f"{_name_words(c.title or '')} {c.doc}")
            used.setdefault(c.doc_id, set()).update(_words(c.text))
        df: dict[str, int] = {}
        for d, title in titles.items():
            for w in used[d] | set(_words(title)):
                df[w] = df.get(w, 0) + 1
        n = len(titles)
        return {d: {w: float(np.log((n + 1) / df[w])) for w in set(_words(t))} for d, t in titles.items()}

    def title_ranking(self, query: str, candidates: list[int]) -> list[int]:
        """Candidates of the documents whose title the query names most clearly, best first; [] if none stands out."""
        q = set(_words(query))
        scores = {d: sum(v for w, v in terms.items() if w in q) for d, terms in self._title_terms.items()}
        if not scores:
            return []
        best, second = (sorted(scores.values(), reverse=True) + [0.0])[:2]
        if best < self.settings.title_min_score or best - second < self.settings.title_margin:
            return []  # no title named, or several named nearly alike: nothing to route on
        return [i for i in candidates if scores[self.chunks[i].doc_id] >= best - 1e-9]

    def worked_example(self, passages) -> WorkedExample | None:
        """A worked example from a document the question did not retrieve (its answer can never be copied
        into this one), built from a labelled field of that document; None when the corpus has none."""
        if not self.settings.worked_example:
            return None
        if self._examples is None:
            self._examples = {}
            for c in self.chunks:
                if c.doc_id not in self._examples:
                    found = example_from_text(c.text, c.doc)
                    if found is not None:
                        found.source = c.chunk_id
                        found.where = c.doc + (f", page {c.page}" if c.page else "")
                        self._examples[c.doc_id] = found
        retrieved = {p.doc_id for p in passages}
        return next((e for d, e in self._examples.items() if d not in retrieved), None)

    # ------------------------------------------------------------ the API
    def retrieve(self, query: str, k: int | None = None, mode: str | None = None) -> list[Passage]:
        query = (query or "").strip()
        if not query:
            raise BadInputError("The question is empty.")
        k = int(k or self.settings.k)
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise BadInputError(f"Unknown retrieval mode '{mode}': use one of {', '.join(MODES)}.")
        n = max(self.settings.candidates, k * 4)
        query = normalize_query(query)
        if mode == "dense":
            hits = [(i, s, {"dense": r}) for r, (i, s) in enumerate(self.dense_search(query, n), start=1)]
        elif mode == "bm25":
            hits = [(i, s, {"bm25": r}) for r, (i, s) in enumerate(self.bm25_search(query, n), start=1)]
        else:
            rankings = {"dense": [i for i, _ in self.dense_search(query, n)],
                        "bm25": [i for i, _ in self.bm25_search(query, n)]}
            weights = {"dense": self.settings.dense_weight, "bm25": self.settings.bm25_weight,
                       "title": self.settings.title_weight}
            if self.settings.title_weight:  # the routed document's candidates, in plain fused order
                fused = [i for i, _, _ in rrf_fuse(rankings, {"dense": 1.0, "bm25": 1.0}, self.settings.rrf_k)]
                rankings["title"] = self.title_ranking(query, fused)
            rankings = {name: ids for name, ids in rankings.items() if weights.get(name)}
            hits = rrf_fuse(rankings, weights, self.settings.rrf_k)
        if mode == "hybrid" and (self.settings.doc_boost or self.settings.page_boost):
            hits = self._group_boost(hits[:n])
        if self.settings.reranker and hits:
            hits = self._rerank(query, hits[:n])
        return [self._passage(i, s, r) for i, s, r in hits[:k]]

    def _group_boost(self, hits):
        """Add to each chunk a share of the fused score of its document and of its page.

        A document (or page) with several relevant chunks is more likely the source than one
        with a single look-alike chunk: products of one catalogue or two plans of one insurer
        share most of their wording, and differ in how much of each document matches.
        """
        by_doc: dict[str, float] = {}
        by_page: dict[tuple, float] = {}
        # Only the head of the list votes: RRF scores are nearly flat further down, where summing
        # would just count how many chunks a document has.
        for i, score, _ in hits[: self.settings.boost_depth]:
            c = self.chunks[i]
            by_doc[c.doc_id] = by_doc.get(c.doc_id, 0.0) + score
            by_page[(c.doc_id, c.page)] = by_page.get((c.doc_id, c.page), 0.0) + score
        boosted = []
        for rank, (i, score, ranks) in enumerate(hits):
            c = self.chunks[i]
            own = score if rank < self.settings.boost_depth else 0.0
            extra = self.settings.doc_boost * (by_doc.get(c.doc_id, 0.0) - own)
            if c.page is not None:
                extra += self.settings.page_boost * (by_page.get((c.doc_id, c.page), 0.0) - own)
            boosted.append((i, score + extra, ranks))
        return sorted(boosted, key=lambda h: -h[1])

    def _passage(self, i: int, score: float, ranks: dict) -> Passage:
        c = self.chunks[i]
        return Passage(c.chunk_id, c.doc, c.page, c.section, c.text, float(score), c.doc_id, ranks)

    def _rerank(self, query: str, hits):
        if self._reranker is None:
            from sentence_transformers import CrossEncoder

            self._reranker = CrossEncoder(str(resolve_embedder(self.settings.reranker).path), device="cpu")
        pairs = [(query, self.chunks[i].text) for i, _, _ in hits]
        scores = np.asarray(self._reranker.predict(pairs, show_progress_bar=False), dtype="float32")
        order = np.argsort(-scores)
        return [(hits[j][0], float(scores[j]), {**hits[j][2], "rerank": r + 1}) for r, j in enumerate(order)]


def retrieve(ws, query: str, k: int = 5, mode: str | None = None) -> list[Passage]:
    return Retriever.for_workspace(ws).retrieve(query, k=k, mode=mode)
