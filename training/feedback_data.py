"""Feedback from deployed use -> chat rows for the next fine-tuning round.

A thumbs-up answer is kept as it was; a correction replaces the answer it corrects; a thumbs-down
without a correction teaches nothing and is dropped. Questions of the held-out test split are
dropped too, so the next round's evaluation stays honest.
"""

from __future__ import annotations

import re

from .chat_data import check_messages, qa_to_messages


def normalize_question(text: str) -> str:
    return " ".join(re.findall(r"\w+", (text or "").lower()))


def rows_from_feedback(feedback_rows, exclude_questions=(), *, system: str | None = None) -> list[dict]:
    """Chat rows (``{"messages", "message_id", "source"}``) from ``ragtune.feedback.list_feedback`` rows.

    Later feedback on the same question wins (people correct themselves); duplicates are merged.
    """
    excluded = {normalize_question(q) for q in exclude_questions}
    chosen: dict[str, dict] = {}
    for fb in feedback_rows:
        question = (fb.get("question") or "").strip()
        correction = (fb.get("correction") or "").strip()
        rating = fb.get("rating")
        if correction:
            answer, source = correction, "correction"
        elif rating in ("up", 1, True):
            answer, source = (fb.get("answer") or "").strip(), "approved"
        else:
            continue
        key = normalize_question(question)
        if not key or not answer or key in excluded:
            continue
        messages = qa_to_messages(question, answer, system)
        if check_messages(messages):
            continue
        if key in chosen and chosen[key]["source"] == "correction" and source == "approved":
            continue  # an explicit correction beats a later thumbs-up on some other wording of the answer
        chosen[key] = {"messages": messages, "message_id": fb.get("message_id"), "source": source}
    return list(chosen.values())
