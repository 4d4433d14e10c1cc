"""Does a passage support a claim? A lexical check shared by groundedness and added citations.

``evaluation.metrics.groundedness`` scores an answer's sentences with it; ``serving.citations``
cites the passage it finds behind each sentence of an answer that cites none. One check, so an
added citation marker and the groundedness score never disagree about a sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that carry no fact of their own; everything else (including numbers) is "content".
STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being am do does did
doing have has had having it its this that these those there here which who whom whose what when where
why how i you he she we they me him her us them my your his our their can could should would will shall
may might must so than then also very just about into over under up down out off more most such only
own same too any each both all some other per via
""".split())
NEGATIONS = frozenset("not no never none nor cannot cant without neither nothing nobody nowhere".split())
CITATION_MARK = re.compile(r"\[(\d+)\]")
MIN_COVERAGE = 0.6  # share of a claim's content words the supporting passage must hold
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*", re.UNICODE)
_NUMBER = re.compile(r"^[0-9]+(?:[.,][0-9]+)*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")


def stem(word: str) -> str:
    # Plural/singular only: enough to match "years" with "year" without a stemmer dependency.
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased words and numbers; "2,000" and "2.5" stay one token, "n't" becomes "not"."""
    text = (text or "").lower().replace("n't", " not").replace("’", "'")
    out = []
    for tok in _WORD.findall(text):
        if _NUMBER.match(tok):
            tok = tok.replace(",", "")  # 1,450 == 1450
        out.append(tok)
    return out


def content_tokens(text: str) -> list[str]:
    return [stem(t) for t in tokens(text) if t not in STOPWORDS and t not in NEGATIONS]


def numbers(text: str) -> set[str]:
    return {t for t in tokens(text) if _NUMBER.match(t)}


def negated_words(text: str, window: int = 4) -> set[str]:
    """Content words that follow a negation closely ("not suitable for winter" -> suitable, winter)."""
    toks = tokens(text)
    out = set()
    for i, tok in enumerate(toks):
        if tok in NEGATIONS:
            out |= {stem(t) for t in toks[i + 1:i + 1 + window] if t not in STOPWORDS and t not in NEGATIONS}
    return out


def split_sentences(text: str) -> list[str]:
    text = CITATION_MARK.sub("", text or "")
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


@dataclass
class ClaimCheck:
    claim: str
    supported: bool
    coverage: float  # share of the claim's content words found in the best passage
    reason: str  # "supported", "not covered", "number mismatch", "negation mismatch", "no content words"
    evidence: str = ""  # the sentence of the best passage closest to the claim
    passage: int | None = None  # index of the best passage; None when the claim has no content words


def check_claim(claim: str, passages: list[str], min_coverage: float = MIN_COVERAGE) -> ClaimCheck:
    """Is one claim supported by one of the passages?

    The best passage is the one covering most of the claim's content words (a passage, not a
    sentence, because a fact and the product it belongs to often sit on different lines); the
    first one wins a tie. The claim is supported when that coverage reaches ``min_coverage`` and
    the passage does not contradict it: every number of the claim appears in the passage, and the
    claim agrees on negation with the passage sentence closest to it ("is waterproof" vs "is not
    waterproof").
    """
    # Numbers are checked on their own, so "6 people" against "4 people" is a contradiction of a
    # covered passage, not merely an uncovered claim.
    words = {w for w in content_tokens(claim) if not _NUMBER.match(w)}
    claim_numbers = numbers(claim)
    if not words and not claim_numbers:
        return ClaimCheck(claim, True, 1.0, "no content words")
    best_i, best, best_cov, best_key = None, "", 0.0, (-1.0, -1)
    for i, passage in enumerate(passages):
        found = set(content_tokens(passage))
        cov = len(words & found) / len(words) if words else float(claim_numbers <= found)
        key = (cov, len(claim_numbers & found))
        if key > best_key:
            best_i, best, best_cov, best_key = i, passage, cov, key
    sentences = split_sentences(best) or [best]
    closest = max(sentences, key=lambda s: (len(words & set(content_tokens(s))), len(claim_numbers & numbers(s))))
    if best_cov < min_coverage:
        return ClaimCheck(claim, False, best_cov, "not covered", closest, best_i)
    if claim_numbers - numbers(best):
        return ClaimCheck(claim, False, best_cov, "number mismatch", closest, best_i)
    # Only negations bearing on the claim's own words count: "waterproof, but not for winter"
    # still supports "it is waterproof".
    if bool(negated_words(claim) & words) != bool(negated_words(closest) & words):
        return ClaimCheck(claim, False, best_cov, "negation mismatch", closest, best_i)
    return ClaimCheck(claim, True, best_cov, "supported", closest, best_i)
