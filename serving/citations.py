"""Cite the passages an answer uses when the model did not: the answer's own words point at them.

A small base model prompted without instructions (``serving.plain_prompt``) answers from the passages
but does not write ``[n]``. Each sentence of such an answer is matched against the numbered passages
it was shown; a passage that holds most of the sentence's words and every one of its numbers is cited
at the end of the answer. A sentence no passage supports is cited by none: a marker is a claim.
"""

from __future__ import annotations

import re

_MARK = re.compile(r"\[\d+\]")
_WORD = re.compile(r"[a-z0-9]+(?:[.,:/-][a-z0-9]+)*")
_NUMBER = re.compile(r"\d")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_STOP = frozenset("""a an the and or of to in on at by for with from as is are was were be been being it its this
that these those there their they he she his her we our you your not no yes what which who when where how
did does do has have had will would can could may might shall should than then so such also about into""".split())
MIN_SUPPORT = 0.6  # share of a sentence's words that one passage must hold


def _words(text: str) -> set[str]:
    return {w.rstrip(".,:") for w in _WORD.findall(text.lower()) if w not in _STOP}


def supporting_passage(sentence: str, passages: list[str]) -> int | None:
    """Index of the passage holding most of `sentence`'s words and all its numbers, or None."""
    words = _words(sentence)
    numbers = {w for w in words if _NUMBER.search(w)}
    if len(words) < 2 and not numbers:  # one plain word says too little to point at a passage
        return None
    best, best_share = None, MIN_SUPPORT
    for i, passage in enumerate(passages):
        have = _words(passage)
        if not numbers <= have:
            continue
        share = len(words & have) / len(words)
        if share >= best_share + (1e-9 if best is not None else 0):
            best, best_share = i, share
    return best


def citation_suffix(answer: str, passages: list[str]) -> str:
    """" [2]" or " [1][3]": the passages supporting the sentences of an answer that cites none; "" otherwise."""
    if not answer.strip() or _MARK.search(answer):
        return ""
    cited: list[int] = []
    for sentence in _SENTENCE.split(answer.strip()):
        i = supporting_passage(sentence, passages)
        if i is not None and i + 1 not in cited:
            cited.append(i + 1)
    return (" " + "".join(f"[{n}]" for n in cited)) if cited else ""
