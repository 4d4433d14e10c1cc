"""Published versions of a workspace's assistant, kept so any of them can be restored.

``publish`` records a new numbered version (variant + adapter + the adapter's base model and data
hash, so a version names exactly what answered) and makes it current; ``rollback`` makes an
earlier version current again. Versions are never rewritten: the history of what was live and
when is an append-only event log. Each version is also written as
``deployments/v<N>.json`` for people reading the workspace folder.

A running deploy server reads the current version on each request, so publish and rollback take
effect at once without a restart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ragtune import adapters as adapter_registry
from ragtune.atomic import atomic_write_json
from ragtune.errors import BadInputError

from ._schema import ensure_schema

VARIANTS = ("base", "rag", "ft", "ft+rag")

MIGRATIONS = [
    [
        "CREATE TABLE deploy_versions (version INTEGER PRIMARY KEY, variant TEXT NOT NULL, adapter TEXT, "
        "base_model TEXT, adapter_path TEXT, dataset TEXT, data_hash TEXT, note TEXT NOT NULL DEFAULT '', "
        "created_at REAL NOT NULL)",
        "CREATE TABLE deploy_events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, action TEXT NOT NULL, "
        "from_version INTEGER, to_version INTEGER, note TEXT NOT NULL DEFAULT '')",
        "CREATE TABLE deploy_state (id INTEGER PRIMARY KEY CHECK (id = 1), current_version INTEGER)",
        "INSERT INTO deploy_state (id, current_version) VALUES (1, NULL)",
    ],
]


@dataclass
class Deployment:
    version: int
    variant: str
    adapter: str | None
    base_model: str | None
    adapter_path: str | None
    dataset: str | None
    data_hash: str | None
    note: str
    created_at: float
    current: bool = False

    @property
    def model(self) -> str:
        """The variant string the serving layer understands, e.g. ``ft+rag:support-v2``."""
        return f"{self.variant}:{self.adapter}" if self.adapter else self.variant

    def to_dict(self) -> dict:
        return {**asdict(self), "model": self.model}


def _open(ws) -> None:
    ensure_schema(ws, "deploy", MIGRATIONS)


def split_variant(text: str) -> tuple[str, str | None]:
    """'ft+rag:name' -> ('ft+rag', 'name'); checks the variant name."""
    variant, _, adapter = (text or "").strip().partition(":")
    variant = variant.strip().lower()
    if variant not in VARIANTS:
        raise BadInputError(f"Unknown variant '{text}'. Use one of: {', '.join(VARIANTS)} "
                            "(ft and ft+rag may name an adapter, e.g. 'ft:my-adapter').")
    return variant, (adapter.strip() or None)


def _resolve_adapter(ws, variant: str, adapter: str | None):
    """The AdapterInfo to deploy, or None for variants without one."""
    if variant in ("base", "rag"):
        if adapter:
            raise BadInputError(f"The '{variant}' variant uses no adapter; use 'ft' or 'ft+rag' to deploy '{adapter}'.")
        return None
    if adapter:
        return adapter_registry.get_adapter(ws, adapter)
    known = adapter_registry.list_adapters(ws)
    if not known:
        raise BadInputError(f"The '{variant}' variant needs a fine-tuned adapter, and this workspace has none yet. "
                            "Fine-tune first, or deploy 'rag' or 'base'.")
    return max(known, key=lambda a: a.created_at or 0)


def _row(row, current_version) -> Deployment:
    return Deployment(version=row["version"], variant=row["variant"], adapter=row["adapter"],
                      base_model=row["base_model"], adapter_path=row["adapter_path"], dataset=row["dataset"],
                      data_hash=row["data_hash"], note=row["note"], created_at=row["created_at"],
                      current=row["version"] == current_version)


def _current_version(conn) -> int | None:
    row = conn.execute("SELECT current_version FROM deploy_state WHERE id=1").fetchone()
    return row["current_version"] if row else None


def publish(ws, variant: str, adapter: str | None = None, note: str = "") -> Deployment:
    """Make `variant` (with `adapter` for ft variants; default the newest) the live assistant."""
    variant, named = split_variant(variant)
    if adapter and named and adapter != named:
        raise BadInputError(f"Two different adapters were given: '{named}' and '{adapter}'.")
    info = _resolve_adapter(ws, variant, adapter or named)
    _open(ws)
    now = time.time()
    with ws.db() as conn:
        previous = _current_version(conn)
        cur = conn.execute(
            "INSERT INTO deploy_versions (variant, adapter, base_model, adapter_path, dataset, data_hash, note, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (variant, info.name if info else None, getattr(info, "base_model", None),
             str(info.path) if info else None, getattr(info, "dataset", None), getattr(info, "data_hash", None),
             note or "", now))
        version = cur.lastrowid
        conn.execute("UPDATE deploy_state SET current_version=? WHERE id=1", (version,))
        conn.execute("INSERT INTO deploy_events (at, action, from_version, to_version, note) VALUES (?, 'publish', ?, ?, ?)",
                     (now, previous, version, note or ""))
        row = conn.execute("SELECT * FROM deploy_versions WHERE version=?", (version,)).fetchone()
    deployment = _row(row, version)
    atomic_write_json(ws.path("deployments", f"v{version}.json"), deployment.to_dict())
    return deployment


def current(ws) -> Deployment | None:
    _open(ws)
    conn = ws.connect()  # read on every request by the server: no write lock
    try:
        row = conn.execute("SELECT v.* FROM deploy_state s JOIN deploy_versions v ON v.version = s.current_version "
                           "WHERE s.id = 1").fetchone()
    finally:
        conn.close()
    return _row(row, row["version"]) if row else None


def get(ws, version: int) -> Deployment:
    _open(ws)
    with ws.db() as conn:
        cur_version = _current_version(conn)
        row = conn.execute("SELECT * FROM deploy_versions WHERE version=?", (int(version),)).fetchone()
        versions = [r["version"] for r in conn.execute("SELECT version FROM deploy_versions ORDER BY version")]
    if row is None:
        raise BadInputError(f"No deployment version {version}. Published versions: "
                            f"{', '.join(f'v{v}' for v in versions) or 'none yet'}.")
    return _row(row, cur_version)


def history(ws) -> list[Deployment]:
    """Every published version, newest first; ``current`` marks the live one."""
    _open(ws)
    with ws.db() as conn:
        cur_version = _current_version(conn)
        rows = conn.execute("SELECT * FROM deploy_versions ORDER BY version DESC").fetchall()
    return [_row(r, cur_version) for r in rows]


def events(ws) -> list[dict]:
    """The log of publishes and rollbacks, oldest first."""
    _open(ws)
    with ws.db() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM deploy_events ORDER BY id")]


def rollback(ws, to_version: int | None = None, note: str = "") -> Deployment:
    """Make an earlier version live again (default: the newest version older than the current one)."""
    _open(ws)
    with ws.db() as conn:
        cur_version = _current_version(conn)
        if to_version is None:
            if cur_version is None:
                raise BadInputError("Nothing is published, so there is nothing to roll back.")
            row = conn.execute("SELECT version FROM deploy_versions WHERE version < ? ORDER BY version DESC LIMIT 1",
                               (cur_version,)).fetchone()
            if row is None:
                raise BadInputError(f"v{cur_version} is the first published version; there is no earlier one to roll back to.")
            to_version = row["version"]
    target = get(ws, to_version)
    if target.adapter:
        adapter_registry.get_adapter(ws, target.adapter)  # a deleted adapter cannot be served again
    with ws.db() as conn:
        conn.execute("UPDATE deploy_state SET current_version=? WHERE id=1", (target.version,))
        conn.execute("INSERT INTO deploy_events (at, action, from_version, to_version, note) VALUES (?, 'rollback', ?, ?, ?)",
                     (time.time(), cur_version, target.version, note or ""))
    return get(ws, target.version)


def unpublish(ws) -> None:
    """Take the assistant offline (the chat page and API answer 503) without deleting any version."""
    _open(ws)
    with ws.db() as conn:
        cur_version = _current_version(conn)
        conn.execute("UPDATE deploy_state SET current_version=NULL WHERE id=1")
        conn.execute("INSERT INTO deploy_events (at, action, from_version, to_version) VALUES (?, 'unpublish', ?, NULL)",
                     (time.time(), cur_version))
