"""Choose the fusion of a corpus when its index is built: weights of the dense, BM25 and title
lists, RRF k, and passages per answer, on questions of that corpus that resemble people's.

Questions, in order of preference: the ones the caller passes (a user's gold set), questions end users
asked the deployed assistant and rated up (with the sources its answer cited), the held-out split of
the workspace's newest generated Q&A set (``datasets/<version>/test.jsonl``), else questions made from
the corpus itself (some content words of one of a document's sentences).

The choice moves away from the fixed defaults only on evidence that resembles real questions. Made
questions are bags of the passage's own words: they reward BM25, and a fusion chosen on them (dense
0.5, BM25 2, RRF k 10, the same on every corpus) lost to dense retrieval alone on analysts' questions
(doc_hit@5 0.720 vs 0.917). People paraphrase: on the gold sets of people's questions, the median share
of a question's content words found in the best chunk of its gold page is well under that of made
questions (``wording_overlap``; figures in docs/retrieval.md). So generated questions count as evidence
only when their overlap is as low as people's (``PARAPHRASE_MAX_OVERLAP``); made ones never do, and
without evidence the defaults stay. On evidence, the grid holds every single list alone and the
defaults, and the chosen setting must find the gold document in the top 5 for at least as many
questions as the defaults and as dense alone.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics

from ragtune.feedback import rated_up_sources

from .search import normalize_query, rrf_fuse

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


MIN_ASKED = 20  # fewer rated answers than this are too few to choose on


def asked_questions(ws) -> list[dict]:
    """Questions people asked the deployed assistant and rated up, with the sources its answer cited, as
    tuning rows ([] when fewer than MIN_ASKED)."""
    rows = [{"question": r["question"], "gold": r["sources"]} for r in rated_up_sources(ws, MAX_QUESTIONS)]
    return rows if len(rows) >= MIN_ASKED else []


def newest_generated_set(ws):
    """The held-out split (test.jsonl) of the workspace's newest generated Q&A set, or None."""
    folder = ws.path("datasets")
    versions = sorted((p for p in folder.glob("*/test.jsonl")), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    return versions[-1] if versions else None


def held_out_questions(ws) -> list[dict]:
    """The held-out split of the newest generated Q&A set of the workspace, as tuning rows ([] if none)."""
    newest = newest_generated_set(ws)
    if newest is None:
        return []
    rows = []
    for line in newest.read_text(encoding="utf-8").splitlines():
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


# A made question copies a chunk's words (overlap 1.0); people's questions found at most this share of
# their content words in the best chunk of their gold page (median per gold set; docs/retrieval.md).
PARAPHRASE_MAX_OVERLAP = 0.75
_NAME_STOP = _STOP | {"what", "which", "does", "did", "when", "where", "why", "who", "how"}


def _content(text: str) -> set[str]:
    return {w.lower().rstrip("'s") for w in _WORD.findall(text or "") if w.lower() not in _NAME_STOP}


def wording_overlap(rows: list[dict], chunks) -> float | None:
    """Median share of a question's content words (its document's name words left out) found in the best
    chunk of its gold document (and page, when named): 1.0 for a question copied from a sentence, lower
    for one asked in other words. None without a row whose gold is in the corpus."""
    by_source: dict[tuple, list] = {}
    for c in chunks:
        by_source.setdefault((c.doc, None), []).append(c)
        by_source.setdefault((c.doc, c.page), []).append(c)
    shares = []
    for row in rows:
        gold = [c for d, p in row["gold"] for c in by_source.get((d, p), by_source.get((d, None), []))]
        if not gold:
            continue
        words = _content(row["question"]) - _content(gold[0].title or "")
        if words:
            shares.append(max(len(words & _content(c.text)) / len(words) for c in gold))
    return statistics.median(shares) if shares else None


def prepare_rows(retriever, rows: list[dict]) -> list[tuple]:
    n = max(retriever.settings.candidates, 40)
    prepared = []
    for row in rows:
        q = normalize_query(row["question"])
        lists = {"dense": [i for i, _ in retriever.dense_search(q, n)], "bm25": [i for i, _ in retriever.bm25_search(q, n)]}
        gold_docs = {d for d, _ in row["gold"]}
        gold_pages = {(d, p) for d, p in row["gold"] if p is not None}
        prepared.append((q, lists, gold_docs, gold_pages))
    return prepared


def fused_order(retriever, prepared_row: tuple, key: tuple) -> list[int]:
    """The fused passages (chunk indices), best first, of one (dense, BM25, title weight, RRF k) setting."""
    dw, bw, tw, k = key
    weights = {"dense": dw, "bm25": bw, "title": tw}
    q, lists, _, _ = prepared_row
    rankings = {name: ids for name, ids in lists.items() if weights[name]}
    if tw:
        fused = [i for i, _, _ in rrf_fuse(lists, {"dense": 1.0, "bm25": 1.0}, k)]
        rankings["title"] = retriever.title_ranking(q, fused)
    return [i for i, _, _ in rrf_fuse(rankings, weights, k)]


def score_setting(retriever, prepared: list[tuple], key: tuple) -> tuple[float, dict[int, int]]:
    """(mean of doc MRR@10 + half the page MRR@10, {m: questions whose gold document is among the top m
    passages}) of one (dense, BM25, title weight, RRF k) setting on prepared rows."""
    chunks = retriever.chunks
    total, hits = 0.0, {m: 0 for m in PASSAGE_COUNTS}
    for row in prepared:
        _, _, gold_docs, gold_pages = row
        order = fused_order(retriever, row, key)
        docs = [chunks[i].doc for i in order]
        pages = list(dict.fromkeys((chunks[i].doc, chunks[i].page) for i in order))
        total += _rr(docs, gold_docs) + (0.5 * _rr(pages, gold_pages) if gold_pages else 0.0)
        for m in PASSAGE_COUNTS:
            hits[m] += bool(set(docs[:m]) & gold_docs)
    return total / len(prepared), hits


def tune_fusion(retriever, rows: list[dict], source: str, *, evidence: bool = True) -> dict:
    """The fusion for this corpus and what it rests on.

    With `evidence` (questions that resemble people's), the grid point with the best score among those
    whose hit@5 is at least the defaults' and dense alone's; exact ties keep the defaults. Without it,
    the defaults, with their scores on `rows` shown for what they are worth."""
    base = retriever.settings
    prepared = prepare_rows(retriever, rows)
    if not prepared:
        return {}
    overlap = wording_overlap(rows, retriever.chunks)
    default = (base.dense_weight, base.bm25_weight, base.title_weight, base.rrf_k)
    dense_alone = max(((1.0, 0.0, 0.0, k) for k in RRF_KS), key=lambda key: score_setting(retriever, prepared, key)[0])
    results = {key: score_setting(retriever, prepared, key) for key in (default, dense_alone)}
    if evidence:
        grid = [key for key in itertools.product(WEIGHTS, WEIGHTS, TITLE_WEIGHTS, RRF_KS) if key[0] or key[1]]
        grid += [(1.0, 0.0, 0.0, k) for k in RRF_KS] + [(0.0, 1.0, 0.0, k) for k in RRF_KS]  # each list alone
        for key in dict.fromkeys(grid):
            if key not in results:
                results[key] = score_setting(retriever, prepared, key)
        floor = max(results[default][1][5], results[dense_alone][1][5])
        allowed = {key: r for key, r in results.items() if r[1][5] >= floor}
        best_score = max(score for score, _ in allowed.values())
        tied = [key for key, (score, _) in allowed.items() if score >= best_score - 1e-9]
        chosen = default if default in tied else min(tied, key=_plainness)
        score, hits = results[chosen]
        top = max(hits.values())
        passages = next(m for m in PASSAGE_COUNTS if hits[m] >= 0.97 * top)
    else:
        chosen, passages = default, base.k
    bm25_alone = (0.0, 1.0, 0.0, base.rrf_k)
    singles = {"dense": results[dense_alone][0], "bm25": score_setting(retriever, prepared, bm25_alone)[0]}
    n = len(prepared)
    return {"settings": dict(zip(FUSION_KEYS, chosen), k=passages),
            "questions": n, "source": source, "evidence": evidence,
            "wording_overlap": None if overlap is None else round(overlap, 3),
            "score": round(results[chosen][0], 4), "default_score": round(results[default][0], 4),
            "single_scores": {k: round(v, 4) for k, v in singles.items()},
            "hit_at_5": {"chosen": round(results[chosen][1][5] / n, 3), "defaults": round(results[default][1][5] / n, 3),
                         "dense": round(results[dense_alone][1][5] / n, 3)}}


def _plainness(key) -> tuple:
    dw, bw, tw, k = key
    return (abs(math.log2(dw or 0.25)) + abs(math.log2(bw or 0.25)), abs(tw - 1), abs(k - 60))


def describe_tuning(tuned: dict | None) -> str:
    """One line saying which fusion the index uses and what the choice rests on, for `eval-retrieval` and the
    Build screen."""
    if not tuned or not tuned.get("settings"):
        return "Fusion: the default settings (not tuned for this corpus)."
    s = tuned["settings"]
    singles = tuned.get("single_scores") or {}
    setting = (f"dense {s['dense_weight']:g}, BM25 {s['bm25_weight']:g}, title {s['title_weight']:g}, "
               f"RRF k {s['rrf_k']}, {s['k']} passages per answer")
    overlap = tuned.get("wording_overlap")
    wording = f"; {overlap:.0%} of their words are in the passage" if overlap is not None else ""
    scores = (f"score {tuned['score']:.3f} vs defaults {tuned['default_score']:.3f}, dense alone "
              f"{singles.get('dense', 0):.3f}, BM25 alone {singles.get('bm25', 0):.3f}")
    if tuned.get("evidence", True):
        return f"Fusion chosen for this corpus: {setting} (on {tuned['questions']} {tuned['source']}{wording}: {scores})."
    return (f"Fusion: the defaults ({setting}). Nothing was chosen on the {tuned['questions']} {tuned['source']}"
            f"{wording} (people's questions: at most {PARAPHRASE_MAX_OVERLAP:.0%}): questions that copy the "
            f"documents' words reward BM25 and mislead the choice ({scores}). A gold set of questions people wrote "
            "(`ragtune index --qa FILE`) lets ragtune choose.")
