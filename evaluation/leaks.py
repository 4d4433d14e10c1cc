"""ragtune's own prompt wording found in answers: a small model that copies its instructions
(or a fixed worked example) instead of answering shows up here."""

from __future__ import annotations

from retrieval.prompt import DEFAULT_SYSTEM, prompt_leaks
from serving.prompts import DEFAULT_PROMPTS


def own_prompt_texts() -> list[str]:
    """Every text ragtune itself writes into a prompt (instructions and templates)."""
    return [DEFAULT_SYSTEM, *[v for v in DEFAULT_PROMPTS.values() if v],
            "Passages:", "Question:"]


def leaking_answers(answers: list[str], words: int = 6) -> list[tuple[int, list[str]]]:
    """(index, leaked word runs) for each answer holding `words` consecutive words of ragtune's prompts."""
    texts = own_prompt_texts()
    return [(i, found) for i, a in enumerate(answers) if (found := prompt_leaks(a or "", texts, words))]
