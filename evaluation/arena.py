"""Blind side-by-side arena: two anonymous variants answer one question, a person votes.

Which variant sits on which side is drawn at random and revealed only after the vote, so the
vote judges the answer, not the name. Ratings come from a Bradley-Terry fit of all votes with
bootstrap intervals (``stats.bradley_terry_with_ci``), as Chatbot Arena does.
"""

from __future__ import annotations

import json
import random
import time
import uuid

from ragtune.errors import BadInputError

from . import store
from .stats import VOTE_SCORES, bradley_terry_with_ci

VOTES = tuple(VOTE_SCORES)  # left, right, tie, both_bad


def _answer_dict(answer) -> dict:
    return answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)


def new_battle(ws, assistant, question: str, variants, *, options=None, rng: random.Random | None = None) -> dict:
    """Two different variants (drawn from ``variants``) answer ``question``; returns
    {battle_id, question, left_text, right_text} without saying which is which."""
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    variants = list(dict.fromkeys(v.strip() for v in variants))
    if len(variants) < 2:
        raise BadInputError("A battle needs at least two different variants, e.g. rag and ft.")
    if not isinstance(question, str) or not question.strip():
        raise BadInputError("Ask a question for the battle: the text is empty.")
    rng = rng or random.Random()
    left, right = rng.sample(variants, 2)
    answers = [_answer_dict(assistant.answer(question.strip(), variant=v, options=options)) for v in (left, right)]
    battle_id = f"battle-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    store.open_store(ws)
    with ws.db() as conn:
        conn.execute(
            "INSERT INTO arena_battles (battle_id, created_at, question, left_variant, right_variant, left_answer,"
            " right_answer) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (battle_id, time.time(), question.strip(), left, right,
             json.dumps(answers[0], default=str), json.dumps(answers[1], default=str)))
    return {"battle_id": battle_id, "question": question.strip(),
            "left_text": answers[0].get("text", ""), "right_text": answers[1].get("text", "")}


def record_vote(ws, battle_id: str, vote: str) -> dict:
    """Store the vote and reveal the two variants: {battle_id, vote, left_variant, right_variant}."""
    if vote not in VOTES:
        raise BadInputError(f"Unknown vote '{vote}': use one of {', '.join(VOTES)}.")
    store.open_store(ws)
    with ws.db() as conn:
        row = conn.execute("SELECT left_variant, right_variant, vote FROM arena_battles WHERE battle_id=?",
                           (battle_id,)).fetchone()
        if row is None:
            raise BadInputError(f"No battle '{battle_id}' in workspace '{ws.name}'.")
        if row["vote"] is not None:
            raise BadInputError(f"Battle '{battle_id}' already has a vote ({row['vote']}); start a new battle.")
        conn.execute("UPDATE arena_battles SET vote=?, voted_at=? WHERE battle_id=?", (vote, time.time(), battle_id))
    return {"battle_id": battle_id, "vote": vote, "left_variant": row["left_variant"],
            "right_variant": row["right_variant"]}


def list_battles(ws, voted_only: bool = False) -> list[dict]:
    store.open_store(ws)
    sql = "SELECT battle_id, created_at, question, left_variant, right_variant, vote, voted_at FROM arena_battles"
    if voted_only:
        sql += " WHERE vote IS NOT NULL"
    with ws.db() as conn:
        rows = conn.execute(sql + " ORDER BY created_at").fetchall()
    return [dict(r) for r in rows]


def leaderboard(ws, *, resamples: int = 200, seed: int = 0) -> list[dict]:
    """[{variant, rating, ci_low, ci_high, battles}], best first (Elo scale, mean 1000)."""
    battles = [(b["left_variant"], b["right_variant"], b["vote"]) for b in list_battles(ws, voted_only=True)]
    return bradley_terry_with_ci(battles, resamples=resamples, seed=seed)
