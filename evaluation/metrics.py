"""Per-answer metrics. Each one is a plain function of (answer, reference, passages, gold source).

Every metric returns a float in [0, 1] (or seconds / tokens for the speed metrics), or ``None``
when it does not apply (groundedness of an answer given no passages, citation accuracy of an
answer that cites nothing); ``None`` values are left out of the means.
The one-line explanations shown in the UI and the report are in ``METRIC_DOCS``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePath

import numpy as np

from ragtune.claim_support import CITATION_MARK as _CITATION_MARK
from ragtune.claim_support import (MIN_COVERAGE, ClaimCheck, stem, check_claim, content_tokens, numbers,
                                   split_sentences, tokens)
from ragtune.models import DEFAULT_EMBEDDER, resolve_embedder
from serving.engine import decode_tokens_per_s, e2e_tokens_per_s

METRIC_DOCS: dict[str, str] = {
    "exact_match": "1 when the answer equals the reference after lower-casing and removing punctuation, articles and extra spaces (SQuAD).",
    "fact_hit": "1 when every number and code of the reference (amounts, durations, dates, part numbers) that the question does not already name appears in the answer; only for references that have one. A fluent answer with a wrong value scores 0.",
    "token_f1": "Word overlap between answer and reference after the question's words are removed from both (SQuAD F1 on what the question did not say), so restating the question earns nothing.",
    "semantic_similarity": "Cosine similarity of the answer and reference embeddings (the workspace's embedder) after the question's words are removed from both, so paraphrases score high and echoes of the question do not.",
    "claim_recall": "Share of the reference's sentences that the answer states: every number of a sentence that has numbers, else 60% of its content words that the question does not name, found in the answer. For long answers, where word overlap is diluted.",
    "echo_rate": "Share of answers that restate the question: half of its content words repeated, no new number or code, and at most three new content words (fewer than half as many as repeated).",
    "loop_rate": "Share of answers that loop: a run of four words repeated three times or more, or one word four times in a row.",
    "groundedness": "Share of the answer's sentences supported by a retrieved passage (lexical check: 60% of content words covered, no number or negation contradicting it); only for variants with passages.",
    "context_recall": "Share of the reference answer's content words that appear in the retrieved passages: did retrieval find what was needed?",
    "hit_at_k": "1 when one of the k retrieved passages comes from the gold source document (and gold page, when known).",
    "citation_accuracy": "Share of the sources an answer cites ([n] markers; without markers, the first source shown with it) that are the gold document (and page).",
    "citation_rate": "Share of answers whose text cites a passage with an [n] marker.",
    "refusal_rate": "Share of answers that decline ('I don't know', 'not in the documents').",
    "judge_score": "Correctness from 0 to 1 given by the optional LLM judge (prompt shown in the report).",
    "ttft_s": "Seconds until the first token of the answer.",
    "latency_s": "Seconds until the whole answer was generated.",
    "decode_tokens_per_s": "Answer tokens after the first per second after the first token: the model's decode speed.",
    "e2e_tokens_per_s": "Answer tokens per second of the whole answer (retrieval and prompt processing included): what a user waits for.",
    "prompt_tokens": "Tokens sent to the model (question plus retrieved passages).",
    "completion_tokens": "Tokens the model generated.",
}

# Metrics that are "higher is better" and say how right an answer is.
CORRECTNESS_METRICS = ("token_f1", "semantic_similarity", "claim_recall", "fact_hit", "exact_match", "judge_score")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse spaces.

    Citation markers such as "[1]" are dropped first, so citing a source costs no score.
    """
    text = _CITATION_MARK.sub(" ", text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------- what the question did not say
# An answer that restates the question shares the reference's words about the subject ("the K7 battery
# lasts ...") without saying what was asked; on analysts' questions such echoes scored as well as grounded
# answers on token F1 and better on embedding similarity. So the answer metrics compare what each side adds
# to the question: its words are removed from both (matched on a plural-folding stem, so "lasts" goes
# with "last"). A reference made only of the question's words (a yes/no confirmation) is kept whole.

def _question_stems(question: str | None) -> set[str]:
    return {stem(w) for w in normalize_answer(question or "").split()}


def beyond_question(text: str, question: str | None) -> list[str]:
    """The normalised words of `text` that the question does not contain."""
    asked = _question_stems(question)
    return [w for w in normalize_answer(text).split() if stem(w) not in asked]


def _compared(prediction: str, reference: str, question: str | None) -> tuple[list[str], list[str]]:
    ref = beyond_question(reference, question)
    if not ref:  # nothing beyond the question to find: compare the texts as they are
        return normalize_answer(prediction).split(), normalize_answer(reference).split()
    return beyond_question(prediction, question), ref


def token_f1(prediction: str, reference: str, question: str | None = None) -> float:
    """SQuAD token F1; with `question`, on the words neither side shares with the question."""
    return _f1(*_compared(prediction, reference, question))


# Codes ("E-214", "LR-K7-2031") and free-standing numbers; a digit inside a name ("K7") is not a value.
_KEY_VALUE = re.compile(r"[A-Z]{1,5}-[A-Z0-9-]*\d[A-Z0-9-]*|(?<![\w.-])\d[\d,]*(?:\.\d+)?")


def key_values(text: str) -> set[str]:
    """The numbers and codes of a text: the part of an answer that cannot be guessed."""
    return {v.replace(",", "").rstrip(".") for v in _KEY_VALUE.findall(text or "")}


def fact_hit(prediction: str, reference: str, question: str | None = None) -> float | None:
    """1.0 when every value of the reference is in the prediction, 0.0 if one is missing, None if it has none.
    Values the question names ("What does error E-214 mean?") are not a fact an answer can be credited for."""
    keys = key_values(reference) - key_values(question or "")
    if not keys:
        return None
    # A citation marker "[1]" is not the value 1.
    return float(keys <= key_values(_CITATION_MARK.sub(" ", prediction or "")))


# ----------------------------------------------------------------- lexical claim support

@dataclass
class Groundedness:
    score: float | None
    claims: list[ClaimCheck] = field(default_factory=list)


def groundedness(answer: str, passages: list[str], min_coverage: float = MIN_COVERAGE) -> Groundedness:
    """Share of the answer's claims (sentences with content words) supported by the passages.

    ``None`` when there are no passages or the answer makes no claim (e.g. it is empty).
    """
    passages = [p for p in passages or [] if p and p.strip()]
    if not passages:
        return Groundedness(None)
    claims = [c for c in split_sentences(answer) if content_tokens(c)]
    if not claims:
        return Groundedness(None)
    checks = [check_claim(c, passages, min_coverage) for c in claims]
    return Groundedness(sum(c.supported for c in checks) / len(checks), checks)


def context_recall(reference: str, passages: list[str]) -> float | None:
    """Share of the reference's distinct content words present anywhere in the passages."""
    if passages is None:
        return None
    ref = set(content_tokens(reference))
    if not ref:
        return None
    found = set()
    for p in passages:
        found |= set(content_tokens(p))
    return len(ref & found) / len(ref)


def claim_recall(prediction: str, reference: str, question: str | None = None,
                 min_coverage: float = MIN_COVERAGE) -> float | None:
    """Share of the reference's sentences the prediction states (see METRIC_DOCS); None when no sentence of
    the reference says anything beyond the question."""
    asked = set(content_tokens(question or ""))
    said, said_numbers = set(content_tokens(prediction)), numbers(_CITATION_MARK.sub(" ", prediction or ""))
    stated = []
    for sentence in split_sentences(reference):
        values = numbers(sentence) - numbers(question or "")
        words = {w for w in content_tokens(sentence) if w not in asked and w not in values}
        if not words and not values:
            continue
        # A sentence with values is stated when its values are (they are the fact; its other words may be
        # the writer's: "reported", "total"); one without, by its content words beyond the question.
        stated.append(values <= said_numbers if values else len(words & said) / len(words) >= min_coverage)
    return sum(stated) / len(stated) if stated else None


# ----------------------------------------------------------------- echoes and loops

ECHO_NEW_WORDS = 3  # an answer adding at most this many content words to the question's ...
ECHO_OVERLAP = 0.5  # ... while repeating at least this share of them, and more than twice as many as it adds,
# and no number or code, restates the question ("The K7 battery lasts on a full charge." for "How long does the
# K7 battery last on a full charge?"); "It sleeps 4 people." for "How many people?" answers it.


def is_echo(answer: str, question: str) -> float | None:
    """1.0 when the answer restates the question (see METRIC_DOCS); None for an empty answer or question."""
    said, asked = set(content_tokens(answer)), set(content_tokens(question))
    if not said or not asked:
        return None
    new, repeated = said - asked, said & asked
    if key_values(answer) - key_values(question):
        return 0.0  # it gives a value the question did not have
    return float(len(new) <= ECHO_NEW_WORDS and len(repeated) >= ECHO_OVERLAP * len(asked)
                 and len(repeated) >= 2 * len(new))


LOOP_NGRAM, LOOP_REPEATS, LOOP_RUN = 4, 3, 4


def is_loop(answer: str) -> float | None:
    """1.0 when the answer loops on a phrase (see METRIC_DOCS); None for an empty answer."""
    words = tokens(_CITATION_MARK.sub(" ", answer or ""))
    if not words:
        return None
    grams = Counter(tuple(words[i:i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1))
    if grams and max(grams.values()) >= LOOP_REPEATS:
        return 1.0
    run = 1
    for before, word in zip(words, words[1:]):
        run = run + 1 if word == before else 1
        if run >= LOOP_RUN:
            return 1.0
    return 0.0


# ----------------------------------------------------------------- sources and citations

def _same_doc(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return PurePath(str(a)).name.lower() == PurePath(str(b)).name.lower()


def source_matches(doc: str | None, page, gold_doc: str | None, gold_page) -> bool:
    """Same file name; when the gold source names a page, the page must match too."""
    if not _same_doc(doc, gold_doc):
        return False
    if gold_page in (None, ""):
        return True
    try:
        return page is not None and int(page) == int(gold_page)
    except (TypeError, ValueError):
        return False


def gold_sources(item: dict) -> list[tuple[str, object]]:
    """A test row's gold (doc, page) pairs: its ``gold`` list when several documents answer it, else doc/page."""
    if item.get("gold"):
        return [(g.get("doc"), g.get("page")) for g in item["gold"]]
    return [(item["doc"], item.get("page"))] if item.get("doc") else []


def _matches_any(source: dict, gold: list) -> bool:
    return any(source_matches(source.get("doc"), source.get("page"), d, p) for d, p in gold)


def hit_at_k(passages: list[dict], gold_doc, gold_page=None, k: int | None = None) -> float | None:
    """Whether any of the top-k passages is a gold source; `gold_doc` is a file name or a list of (doc, page)."""
    gold = gold_doc if isinstance(gold_doc, list) else ([(gold_doc, gold_page)] if gold_doc else [])
    if not gold or passages is None:
        return None
    top = passages[:k] if k else passages
    return float(any(_matches_any(p, gold) for p in top))


def cited_sources(text: str, citations: list[dict]) -> tuple[list[dict], bool]:
    """The sources an answer cites: those its [n] markers name, else the first source shown with it.

    Returns (sources, explicit) where explicit says whether the text itself carried markers.
    """
    marks = {int(n) for n in _CITATION_MARK.findall(text or "")}
    named = [c for c in citations if c.get("n") in marks]
    if named:
        return named, True
    return citations[:1], False


def citation_accuracy(citations: list[dict], gold_doc, gold_page=None) -> float | None:
    gold = gold_doc if isinstance(gold_doc, list) else ([(gold_doc, gold_page)] if gold_doc else [])
    if not gold or not citations:
        return None
    hits = [_matches_any(c, gold) for c in citations]
    return sum(hits) / len(hits)


# ----------------------------------------------------------------- refusals

_REFUSAL = re.compile(
    r"\b(i (do not|don't|cannot|can't|am unable to|am not able to) (know|find|answer|say|tell|help|determine|provide)"
    r"|i'm (not sure|unable|sorry)|i am (not sure|sorry)|not (mentioned|stated|specified|provided|included) in"
    r"|(no|not enough) information|cannot be (found|determined|answered)|unable to (find|answer|determine)"
    r"|(the )?(documents?|passages?|context) (does|do) not (contain|mention|say|include|provide))",
    re.IGNORECASE,
)


def is_refusal(answer: str) -> float:
    text = (answer or "").strip()
    if not text:
        return 1.0  # an empty answer declines as surely as "I don't know"
    return float(bool(_REFUSAL.search(text.replace("’", "'"))))


# ----------------------------------------------------------------- semantic similarity

@lru_cache(maxsize=2)
def _embedder(name: str):
    from sentence_transformers import SentenceTransformer  # heavy optional library: only when answers are compared

    return SentenceTransformer(str(resolve_embedder(name).path), device="cpu")


_VECTORS: dict[tuple[str, str], object] = {}  # (embedder, text) -> unit vector; reruns in one process skip encoding
_VECTORS_MAX = 50_000


def _vectors(texts: list[str], embedder: str):
    missing = list(dict.fromkeys(t for t in texts if (embedder, t) not in _VECTORS))
    if missing:
        if len(_VECTORS) + len(missing) > _VECTORS_MAX:
            _VECTORS.clear()
        encoded = _embedder(embedder).encode(missing, batch_size=32, normalize_embeddings=True,
                                             convert_to_numpy=True, show_progress_bar=False)
        _VECTORS.update({(embedder, t): v for t, v in zip(missing, encoded)})
    return np.stack([_VECTORS[(embedder, t)] for t in texts])


def semantic_similarities(predictions: list[str], references: list[str], embedder: str | None = None,
                          questions: list[str | None] | None = None) -> list[float]:
    """Cosine similarity of each (prediction, reference) pair with the embedder, clipped to [0, 1]. With
    `questions`, each pair is compared on the words beyond its question (an answer with none scores 0)."""
    if not predictions:
        return []
    name = embedder or DEFAULT_EMBEDDER
    pairs = [_compared(p or "", r, q) for p, r, q in zip(predictions, references, questions or [None] * len(predictions))]
    preds = [" ".join(p) for p, _ in pairs]
    refs = [" ".join(r) for _, r in pairs]
    sims = (_vectors(preds, name) * _vectors(refs, name)).sum(axis=1)
    return [0.0 if not p else float(min(1.0, max(0.0, s))) for p, s in zip(preds, sims)]


# ----------------------------------------------------------------- one answer, all metrics

def references(item: dict) -> list[str]:
    """The acceptable answers of a test row: its ``answers`` when it has several, else its ``answer``."""
    return list(item.get("answers") or [item.get("answer", "")])


def best_of(values) -> float | None:
    """The best score over the acceptable answers, leaving out those a metric does not apply to."""
    scored = [v for v in values if v is not None]
    return max(scored) if scored else None


def answer_metrics(answer: dict, item: dict, *, uses_passages: bool, k: int | None = None) -> dict:
    """All lexical/structural metrics of one stored answer (semantic similarity is added in batch).

    Against a row with several acceptable answers, each correctness metric takes the best of them."""
    text = answer.get("text", "")
    question = item.get("question")
    refs = references(item)
    passages = answer.get("passages") or []
    passage_texts = [p.get("text", "") for p in passages]
    m = {
        "exact_match": best_of(exact_match(text, r) for r in refs),
        "token_f1": best_of(token_f1(text, r, question) for r in refs),
        "claim_recall": best_of(claim_recall(text, r, question) for r in refs),
        "fact_hit": best_of(fact_hit(text, r, question) for r in refs),
        "refusal_rate": is_refusal(text),
        "echo_rate": is_echo(text, question or ""),
        "loop_rate": is_loop(text),
        "prompt_tokens": answer.get("prompt_tokens"),
        "completion_tokens": answer.get("completion_tokens"),
        "ttft_s": answer.get("ttft_s"),
        "latency_s": answer.get("latency_s"),
    }
    m["decode_tokens_per_s"] = decode_tokens_per_s(m["completion_tokens"], m["ttft_s"], m["latency_s"])
    m["e2e_tokens_per_s"] = e2e_tokens_per_s(m["completion_tokens"], m["latency_s"])
    if uses_passages:
        g = groundedness(text, passage_texts) if not m["refusal_rate"] else Groundedness(None)
        m["groundedness"] = g.score
        m["context_recall"] = best_of(context_recall(r, passage_texts) for r in refs)
        m["hit_at_k"] = hit_at_k(passages, gold_sources(item), k=k)
        cited, explicit = cited_sources(text, answer.get("citations") or [])
        m["citation_rate"] = float(explicit)
        m["citation_accuracy"] = citation_accuracy(cited, gold_sources(item))
    return m
