"""Cite the passages an answer uses when the model did not: the answer's own words point at them.

A small base model prompted without instructions (``serving.plain_prompt``) answers from the passages
but does not write ``[n]``. Each sentence of such an answer is checked against the numbered passages
it was shown with ``ragtune.claim_support.check_claim`` (the check the groundedness metric makes); the
passage supporting it is cited at the end of the answer. A sentence no passage supports is cited by
none: a marker is a claim.
"""

from __future__ import annotations

from ragtune.claim_support import CITATION_MARK, check_claim, content_tokens, numbers, split_sentences


def supporting_passage(sentence: str, passages: list[str]) -> int | None:
    """Index of the passage that supports `sentence`, or None."""
    if len(content_tokens(sentence)) < 2 and not numbers(sentence):  # "Yes." says too little to point at a passage
        return None
    check = check_claim(sentence, passages)
    return check.passage if check.supported else None


def citation_suffix(answer: str, passages: list[str]) -> str:
    """" [2]" or " [1][3]": the passages supporting the sentences of an answer that cites none; "" otherwise."""
    if not answer.strip() or CITATION_MARK.search(answer):
        return ""
    cited: list[int] = []
    for sentence in split_sentences(answer):
        i = supporting_passage(sentence, passages)
        if i is not None and i + 1 not in cited:
            cited.append(i + 1)
    return (" " + "".join(f"[{n}]" for n in cited)) if cited else ""
