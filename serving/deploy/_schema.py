"""Apply a component's migrations once per workspace database per process.

``Workspace.migrate`` opens a write transaction; the deploy server would otherwise take that
lock several times per request. The database file's inode is part of the key, so a workspace
deleted and recreated at the same path is migrated again.
"""

from __future__ import annotations

import threading

_done: set[tuple] = set()
_lock = threading.Lock()


def ensure_schema(ws, component: str, migrations) -> None:
    try:
        key = (str(ws.db_path), ws.db_path.stat().st_ino, component)
    except FileNotFoundError:
        key = None
    if key is not None and key in _done:
        return
    ws.migrate(component, migrations)
    if key is not None:
        with _lock:
            _done.add(key)
