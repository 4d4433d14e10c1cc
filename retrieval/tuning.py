"""Choose the fusion of a corpus when its index is built: weights of the dense, BM25 and title
lists, RRF k, and passages per answer, on held-out questions of that corpus.

Questions, in order of preference: the ones the caller passes (a user's gold set), the held-out
split of the workspace's newest generated Q&A set (``datasets/<version>/test.jsonl``), else
questions made from the corpus itself: some content words of one of a document's sentences,
numbers left out, and for half of them two rare words of its identity line (what a person names:
the place, the company, the trial) (the answer is what a question lacks). The grid holds every single
list alone, so the choice scores at least as well as the best single list on those questions;
ties keep the defaults. Nothing here is fitted to one corpus: every corpus gets its own choice.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re

WEIGHTS = (0.0, 0.5, 1.0, 2.0)
# Title routing stays on in every fusion: it fires only when a question clearly names one document, and
# made questions (which name rare identity words, not titles) cannot show what it is worth on real ones.
TITLE_WEIGHTS = (1.0, 2.0)
RRF_KS = (10, 30, 60)
PASSAGE_COUNTS = (3, 4, 5, 6, 8)
MAX_QUESTIONS = 150
DEPTH = 10
FUSION_KEYS = ("dense_weight", "bm25_weight", "title_weight", "rrf_k")

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset("""the and for with are was were what how does this that from your you can is of in to on at by an
or be has have had not but its their they them which who when where will would should could into than then also
been being about after before over under more most such each other some any all per may shall must these those""".split())


def made_questions(chunks, n: int = MAX_QUESTIONS, seed: int = 0) -> list[dict]:
    """Questions made from the corpus: {"question", "gold": [(doc, page)]}, spread over its documents."""
    rng = random.Random(seed)
    by_doc: dict[str, list] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    df: dict[str, int] = {}
    for d, cs in by_doc.items():
        for w in {w.lower() for c in cs for w in _WORD.findall(f"{c.title or ''} {c.text}")}:
            df[w] = df.get(w, 0) + 1
    docs = sorted(by_doc)
    rng.shuffle(docs)
    rows: list[dict] = []
    for round_ in range(n):
        if len(rows) >= n or not docs:
            break
        d = docs[round_ % len(docs)]
        c = rng.choice(by_doc[d])
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", c.text) if 6 <= len(s.split()) <= 40]
        if not sentences:
            continue
        words = [w for w in _WORD.findall(rng.choice(sentences)) if w.lower() not in _STOP]
        if len(words) < 3:
            continue
        keep = sorted(rng.sample(range(len(words)), max(2, len(words) // 2)))
        # Half the questions name their document, half do not: people ask both ways, and a fusion
        # that only shines when the document is named must not win on named questions alone.
        naming = sorted({w for w in _WORD.findall(c.title or "") if w.lower() not in _STOP},
                        key=lambda w: (df.get(w.lower(), 0), w))[:2] if round_ % 2 == 0 else []
        question = " ".join(naming + [words[i] for i in keep])
        rows.append({"question": question, "gold": [(c.doc, c.page)]})
    return rows


def held_out_questions(ws) -> list[dict]:
    """The held-out split of the newest generated Q&A set of the workspace, as tuning rows ([] if none)."""
    folder = ws.path("datasets")
    versions = sorted((p for p in folder.glob("*/test.jsonl")), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    if not versions:
        return []
    rows = []
    for line in versions[-1].read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("question") and r.get("doc"):
            rows.append({"question": r["question"], "gold": [(r["doc"], r.get("page"))]})
    return rows[:MAX_QUESTIONS]


def _rr(ranked_docs: list, gold: set, depth: int = DEPTH) -> float:
    for i, d in enumerate(ranked_docs[:depth], start=1):
        if d in gold:
            return 1.0 / i
    return 0.0


def tune_fusion(retriever, rows: list[dict], source: str, single_margin: float = 0.0) -> dict:
    """The grid point with the best mean score (doc MRR@10 + half the page MRR@10) on `rows`.

    A single list is chosen over the best fusion only when it scores more than `single_margin`
    (relative) above it: questions made from the corpus share its wording, which flatters BM25,
    so for them a fusion that is nearly as good is the safer choice on real questions.
    """
    from .search import rrf_fuse, normalize_query

    base = retriever.settings
    n = max(base.candidates, 40)
    prepared = []
    for row in rows:
        q = normalize_query(row["question"])
        lists = {"dense": [i for i, _ in retriever.dense_search(q, n)], "bm25": [i for i, _ in retriever.bm25_search(q, n)]}
        gold_docs = {d for d, _ in row["gold"]}
        gold_pages = {(d, p) for d, p in row["gold"] if p is not None}
        prepared.append((q, lists, gold_docs, gold_pages))
    if not prepared:
        return {}
    chunks = retriever.chunks

    def evaluate(dw, bw, tw, k):
        weights = {"dense": dw, "bm25": bw, "title": tw}
        total, hits = 0.0, {m: 0 for m in PASSAGE_COUNTS}
        for q, lists, gold_docs, gold_pages in prepared:
            rankings = {name: ids for name, ids in lists.items() if weights[name]}
            if tw:
                fused = [i for i, _, _ in rrf_fuse(lists, {"dense": 1.0, "bm25": 1.0}, k)]
                rankings["title"] = retriever.title_ranking(q, fused)
            order = [i for i, _, _ in rrf_fuse(rankings, weights, k)]
            docs = [chunks[i].doc for i in order]
            pages = list(dict.fromkeys((chunks[i].doc, chunks[i].page) for i in order))
            total += _rr(docs, gold_docs) + (0.5 * _rr(pages, gold_pages) if gold_pages else 0.0)
            for m in PASSAGE_COUNTS:
                hits[m] += bool(set(docs[:m]) & gold_docs)
        return total / len(prepared), hits

    default = (base.dense_weight, base.bm25_weight, base.title_weight, base.rrf_k)
    results = {}
    grid = [key for key in itertools.product(WEIGHTS, WEIGHTS, TITLE_WEIGHTS, RRF_KS) if key[0] or key[1]]
    grid += [(1.0, 0.0, 0.0, k) for k in RRF_KS] + [(0.0, 1.0, 0.0, k) for k in RRF_KS]  # each list alone
    for dw, bw, tw, k in dict.fromkeys(grid):
        results[(dw, bw, tw, k)] = evaluate(dw, bw, tw, k)
    results.setdefault(default, evaluate(*default))
    every = dict(results)
    fused_best = max(score for (dw, bw, _, _), (score, _) in results.items() if dw and bw)
    best_score = max(score for score, _ in results.values())
    if best_score <= fused_best * (1 + single_margin):
        results = {key: r for key, r in results.items() if key[0] and key[1]}
        best_score = fused_best
    # Exact ties keep the defaults, then the plainest weights.
    slack = 1e-9
    tied = [key for key, (score, _) in results.items() if score >= best_score - slack]
    chosen = default if default in tied else min(tied, key=_plainness)
    score, hits = every[chosen]
    top = max(hits.values())
    passages = next(m for m in PASSAGE_COUNTS if hits[m] >= 0.97 * top)
    singles = {"dense": max(every[(1.0, 0.0, 0.0, k)][0] for k in RRF_KS),
               "bm25": max(every[(0.0, 1.0, 0.0, k)][0] for k in RRF_KS)}
    return {"settings": dict(zip(FUSION_KEYS, chosen), k=passages),
            "questions": len(prepared), "source": source,
            "score": round(score, 4), "default_score": round(every[default][0], 4),
            "single_scores": {k: round(v, 4) for k, v in singles.items()}}


def _plainness(key) -> tuple:
    dw, bw, tw, k = key
    return (abs(math.log2(dw or 0.25)) + abs(math.log2(bw or 0.25)), abs(tw - 1), abs(k - 60))


def describe_tuning(tuned: dict | None) -> str:
    """One line saying which fusion the index uses and why, for `eval-retrieval` and the Build screen."""
    if not tuned or not tuned.get("settings"):
        return "Fusion: the default settings (not tuned for this corpus)."
    s = tuned["settings"]
    singles = tuned.get("single_scores") or {}
    return (f"Fusion chosen for this corpus: dense {s['dense_weight']:g}, BM25 {s['bm25_weight']:g}, "
            f"title {s['title_weight']:g}, RRF k {s['rrf_k']}, {s['k']} passages per answer "
            f"(on {tuned['questions']} {tuned['source']}: score {tuned['score']:.3f} vs defaults "
            f"{tuned['default_score']:.3f}, dense alone {singles.get('dense', 0):.3f}, BM25 alone {singles.get('bm25', 0):.3f}).")
