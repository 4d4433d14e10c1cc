"""API keys of a workspace: created once, stored only as hashes, revocable.

A key looks like ``rtk_<key id>_<secret>``. The key id (12 hex chars) is public and lets a server
find the workspace that owns a key without scanning hashes; the secret (32 random bytes) is the
part that proves possession. Only ``sha256(salt + secret)`` is stored, with a per-key salt, so a
copy of the database does not reveal usable keys. Because the secret is high-entropy, a single
SHA-256 is enough (a slow password hash protects low-entropy secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass

from ragtune.errors import BadInputError

from ._schema import ensure_schema

PREFIX = "rtk"
KEY_RE = re.compile(r"^rtk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
DEFAULT_RATE_PER_MIN = 60
MAX_RATE_PER_MIN = 100_000
TOUCH_EVERY_S = 60

MIGRATIONS = [
    [
        "CREATE TABLE deploy_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, salt TEXT NOT NULL, "
        "hash TEXT NOT NULL, rate_limit_per_min INTEGER NOT NULL, created_at REAL NOT NULL, "
        "revoked_at REAL, last_used_at REAL)",
    ],
]


@dataclass
class KeyInfo:
    """What is kept of an API key: never the key, only its id, its owner's label, its limit and its dates."""

    key_id: str
    name: str
    rate_limit_per_min: int
    created_at: float
    revoked_at: float | None = None  # None while the key works
    last_used_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def display(self) -> str:
        """What a key list shows: enough to recognise a key, never enough to use it."""
        return f"{PREFIX}_{self.key_id}_…"

    def to_dict(self) -> dict:
        return {**asdict(self), "revoked": self.revoked, "display": self.display}


def _open(ws) -> None:
    ensure_schema(ws, "deploy_keys", MIGRATIONS)


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("utf-8")).hexdigest()


def _row_to_info(row) -> KeyInfo:
    return KeyInfo(key_id=row["key_id"], name=row["name"], rate_limit_per_min=row["rate_limit_per_min"],
                   created_at=row["created_at"], revoked_at=row["revoked_at"], last_used_at=row["last_used_at"])


def create_key(ws, name: str, rate_limit_per_min: int = DEFAULT_RATE_PER_MIN) -> str:
    """Create a key and return its plaintext. It is never stored and cannot be shown again."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise BadInputError("Give the key a name of 1-80 characters (for example the app that will use it).")
    try:
        rate = int(rate_limit_per_min)
    except (TypeError, ValueError):
        raise BadInputError(f"The rate limit must be a whole number of requests per minute, not {rate_limit_per_min!r}.") from None
    if not 1 <= rate <= MAX_RATE_PER_MIN:
        raise BadInputError(f"The rate limit must be between 1 and {MAX_RATE_PER_MIN} requests per minute.")
    _open(ws)
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    with ws.db() as conn:
        conn.execute("INSERT INTO deploy_keys (key_id, name, salt, hash, rate_limit_per_min, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (key_id, name, salt, _hash(salt, secret), rate, time.time()))
    return f"{PREFIX}_{key_id}_{secret}"


def list_keys(ws, include_revoked: bool = True) -> list[KeyInfo]:
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute("SELECT * FROM deploy_keys ORDER BY created_at").fetchall()
    keys = [_row_to_info(r) for r in rows]
    return keys if include_revoked else [k for k in keys if not k.revoked]


def _find(ws, key_id_or_name: str) -> KeyInfo:
    keys = list_keys(ws)
    text = key_id_or_name.strip()
    match = KEY_RE.match(text)
    if match:
        text = match.group(1)
    elif text.startswith(f"{PREFIX}_"):
        text = text[len(PREFIX) + 1:].split("_", 1)[0]
    hits = [k for k in keys if k.key_id == text] or [k for k in keys if k.name == text]
    if not hits:
        known = ", ".join(f"{k.name} ({k.key_id})" for k in keys) or "none yet"
        raise BadInputError(f"No API key '{key_id_or_name}' in this workspace. Known keys: {known}.")
    if len(hits) > 1:
        raise BadInputError(f"Several keys are named '{key_id_or_name}'; revoke by key id instead: "
                            + ", ".join(k.key_id for k in hits))
    return hits[0]


def revoke_key(ws, key_id_or_name: str) -> KeyInfo:
    """Revoke a key (by id, name or the full key). Idempotent; the row is kept for the audit trail."""
    info = _find(ws, key_id_or_name)
    if not info.revoked:
        with ws.db() as conn:
            conn.execute("UPDATE deploy_keys SET revoked_at=? WHERE key_id=?", (time.time(), info.key_id))
    return _find(ws, info.key_id)


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = KEY_RE.match((plaintext or "").strip())
    return (match.group(1), match.group(2)) if match else None


def key_id_of(plaintext: str) -> str | None:
    parsed = parse_key(plaintext)
    return parsed[0] if parsed else None


def verify_key(ws, plaintext: str, touch: bool = True) -> KeyInfo | None:
    """The key's info when `plaintext` is a valid, unrevoked key of this workspace, else None."""
    parsed = parse_key(plaintext)
    if parsed is None:
        return None
    key_id, secret = parsed
    _open(ws)
    conn = ws.connect()  # a plain read: no write lock on every request
    try:
        row = conn.execute("SELECT * FROM deploy_keys WHERE key_id=?", (key_id,)).fetchone()
    finally:
        conn.close()
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(_hash(row["salt"], secret), row["hash"]):
        return None
    now = time.time()
    if touch and (row["last_used_at"] or 0) < now - TOUCH_EVERY_S:  # one write a minute, not one per request
        with ws.db() as conn:
            conn.execute("UPDATE deploy_keys SET last_used_at=? WHERE key_id=?", (now, key_id))
    return _row_to_info(row)
