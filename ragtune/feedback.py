"""Conversations with the deployed assistant and what end users thought of each answer.

Every answer is one row (a *turn*) that names the deployment version, variant and adapter that
produced it, so feedback can be traced to exactly what answered. Feedback is one row per turn:
a rating (up / down), an optional correction (the answer the user wanted) and an optional
comment; giving feedback again on the same answer replaces it. The next training round reads
approved answers and corrections from here (``list_feedback``) and marks what it used.

Lives in the core because the deploy server writes it and training reads it.
"""

from __future__ import annotations

import json
import time
import uuid

from .errors import BadInputError

MAX_CORRECTION_CHARS = 4000
MAX_COMMENT_CHARS = 1000
RATINGS = {"up": 1, "down": -1, None: 0}

MIGRATIONS = [
    [
        "CREATE TABLE chat_turns (message_id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, created_at REAL NOT NULL, "
        "channel TEXT NOT NULL, client TEXT, deployment_version INTEGER, variant TEXT NOT NULL, adapter TEXT, "
        "question TEXT NOT NULL, answer TEXT NOT NULL, history TEXT NOT NULL DEFAULT '[]', "
        "citations TEXT NOT NULL DEFAULT '[]', prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL)",
        "CREATE INDEX chat_turns_conversation ON chat_turns (conversation_id, created_at)",
        "CREATE TABLE feedback (message_id TEXT PRIMARY KEY REFERENCES chat_turns(message_id) ON DELETE CASCADE, "
        "rating INTEGER NOT NULL, correction TEXT, comment TEXT, created_at REAL NOT NULL, used_in_round TEXT)",
    ],
]


_migrated: set[tuple] = set()


def _open(ws) -> None:
    # Workspace.migrate takes the write lock; a server records a turn per request, so once is enough.
    try:
        key = (str(ws.db_path), ws.db_path.stat().st_ino)
    except FileNotFoundError:
        key = None
    if key is None or key not in _migrated:
        ws.migrate("feedback", MIGRATIONS)
        if key is not None:
            _migrated.add(key)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def record_conversation(ws, question: str, answer: str, *, variant: str, adapter: str | None = None,
                        deployment_version: int | None = None, conversation_id: str | None = None,
                        channel: str = "api", client: str | None = None, history: list | None = None,
                        citations: list | None = None, prompt_tokens: int | None = None,
                        completion_tokens: int | None = None, latency_s: float | None = None) -> dict:
    """Store one answered question; returns {"conversation_id", "message_id"} for later feedback."""
    _open(ws)
    conversation_id = conversation_id or new_id("conv")
    message_id = new_id("msg")
    with ws.db() as conn:
        conn.execute(
            "INSERT INTO chat_turns (message_id, conversation_id, created_at, channel, client, deployment_version, "
            "variant, adapter, question, answer, history, citations, prompt_tokens, completion_tokens, latency_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message_id, conversation_id, time.time(), channel, client, deployment_version, variant, adapter,
             question, answer, json.dumps(history or [], ensure_ascii=False),
             json.dumps(citations or [], ensure_ascii=False, default=str), prompt_tokens, completion_tokens, latency_s))
    return {"conversation_id": conversation_id, "message_id": message_id}


def get_turn(ws, message_id: str) -> dict:
    _open(ws)
    with ws.db() as conn:
        row = conn.execute("SELECT * FROM chat_turns WHERE message_id=?", (str(message_id),)).fetchone()
    if row is None:
        raise BadInputError(f"No answer '{message_id}' in this workspace; feedback must refer to an answer it gave.")
    return _turn(row)


def _turn(row) -> dict:
    d = dict(row)
    d["history"] = json.loads(d.get("history") or "[]")
    d["citations"] = json.loads(d.get("citations") or "[]")
    return d


def record_feedback(ws, message_id: str, rating: str | None = None, correction: str | None = None,
                    comment: str | None = None, *, client: str | None = None) -> dict:
    """Rate an answer 'up' or 'down' and/or give the correct answer. Replaces earlier feedback on it.

    With `client` set, only the client that received the answer (same key or page session) may rate it.
    """
    if rating not in RATINGS:
        raise BadInputError(f"Rating must be 'up', 'down' or empty, not {rating!r}.")
    correction = (correction or "").strip() or None
    comment = (comment or "").strip() or None
    if rating is None and correction is None and comment is None:
        raise BadInputError("Feedback needs a thumbs up/down, a correction or a comment.")
    if correction and len(correction) > MAX_CORRECTION_CHARS:
        raise BadInputError(f"The correction is too long ({len(correction)} characters; at most {MAX_CORRECTION_CHARS}).")
    if comment and len(comment) > MAX_COMMENT_CHARS:
        raise BadInputError(f"The comment is too long ({len(comment)} characters; at most {MAX_COMMENT_CHARS}).")
    turn = get_turn(ws, message_id)
    if client is not None and turn.get("client") != client:
        raise BadInputError(f"No answer '{message_id}' was given to this client.")
    with ws.db() as conn:
        conn.execute("INSERT OR REPLACE INTO feedback (message_id, rating, correction, comment, created_at, used_in_round) "
                     "VALUES (?, ?, ?, ?, ?, NULL)", (turn["message_id"], RATINGS[rating], correction, comment, time.time()))
    return {"message_id": turn["message_id"], "rating": rating, "correction": correction, "comment": comment,
            "variant": turn["variant"], "adapter": turn["adapter"], "deployment_version": turn["deployment_version"]}


_RATING_NAMES = {1: "up", -1: "down", 0: None}


def list_feedback(ws, *, rating: str | None = None, unused_only: bool = False,
                  deployment_version: int | None = None) -> list[dict]:
    """Feedback joined with the answer it is about, oldest first.

    Each row: message_id, conversation_id, question, answer, rating ('up'|'down'|None), correction,
    comment, variant, adapter, deployment_version, channel, asked_at, feedback_at, used_in_round.
    """
    _open(ws)
    sql = ("SELECT t.message_id, t.conversation_id, t.question, t.answer, t.variant, t.adapter, t.deployment_version, "
           "t.channel, t.created_at AS asked_at, f.rating, f.correction, f.comment, f.created_at AS feedback_at, "
           "f.used_in_round FROM feedback f JOIN chat_turns t ON t.message_id = f.message_id WHERE 1=1")
    params: list = []
    if rating is not None:
        if rating not in ("up", "down"):
            raise BadInputError(f"Rating filter must be 'up' or 'down', not {rating!r}.")
        sql += " AND f.rating=?"
        params.append(RATINGS[rating])
    if unused_only:
        sql += " AND f.used_in_round IS NULL"
    if deployment_version is not None:
        sql += " AND t.deployment_version=?"
        params.append(int(deployment_version))
    with ws.db() as conn:
        rows = conn.execute(sql + " ORDER BY f.created_at", params).fetchall()
    return [_rating_named(dict(r)) for r in rows]


def _rating_named(row: dict) -> dict:
    """The row with its stored rating (1, -1, 0, or None where there is no feedback) as 'up', 'down' or None."""
    row["rating"] = _RATING_NAMES.get(row.get("rating"))
    return row


def rated_up_sources(ws, limit: int = 1000) -> list[dict]:
    """Questions end users asked whose answers they rated up, newest first, each with the sources that answer
    cited ({"question", "sources": [(doc, page)]}): what people ask, in their words, and where they found it.
    Retrieval chooses its fusion on these (retrieval/tuning.py)."""
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute("SELECT t.question, t.citations FROM feedback f JOIN chat_turns t ON t.message_id = "
                            "f.message_id WHERE f.rating = 1 ORDER BY f.created_at DESC LIMIT ?", (int(limit),)).fetchall()
    out = []
    for r in rows:
        cited = [c for c in json.loads(r["citations"] or "[]") if isinstance(c, dict) and c.get("doc")]
        if cited:
            out.append({"question": r["question"], "sources": [(c["doc"], c.get("page")) for c in cited]})
    return out


def mark_used(ws, message_ids, round_id: str) -> int:
    """Record that these feedback rows went into training round `round_id`."""
    ids = list(message_ids)
    if not ids:
        return 0
    _open(ws)
    with ws.db() as conn:
        return sum(conn.execute("UPDATE feedback SET used_in_round=? WHERE message_id=?", (round_id, m)).rowcount
                   for m in ids)


def list_conversations(ws, limit: int = 100) -> list[dict]:
    """The newest turns with their feedback, newest first (for the builder UI)."""
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute(
            "SELECT t.*, f.rating, f.correction FROM chat_turns t LEFT JOIN feedback f ON f.message_id = t.message_id "
            "ORDER BY t.created_at DESC LIMIT ?", (int(limit),)).fetchall()
    return [_rating_named(_turn(r)) for r in rows]


def feedback_counts(ws) -> dict[tuple, dict]:
    """{(variant, adapter): {"answers", "rated", "up", "down", "corrections"}} for monitoring."""
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute(
            "SELECT t.variant, t.adapter, COUNT(*) AS answers, COUNT(f.message_id) AS rated, "
            "SUM(CASE WHEN f.rating = 1 THEN 1 ELSE 0 END) AS up, SUM(CASE WHEN f.rating = -1 THEN 1 ELSE 0 END) AS down, "
            "SUM(CASE WHEN f.correction IS NOT NULL THEN 1 ELSE 0 END) AS corrections "
            "FROM chat_turns t LEFT JOIN feedback f ON f.message_id = t.message_id GROUP BY t.variant, t.adapter").fetchall()
    return {(r["variant"], r["adapter"]): {k: int(r[k] or 0) for k in ("answers", "rated", "up", "down", "corrections")}
            for r in rows}
