"""A workspace: one folder per assistant project, with its metadata in SQLite.

Each component (retrieval, training, evaluation, deploy...) owns its tables and declares them as
an ordered list of migrations; ``Workspace.migrate`` applies the missing ones and records the
version per component, so the schema is versioned without one central file everyone edits.
Two workspaces share nothing: separate folders, separate databases.

A workspace holds chat turns, documents and API key hashes: its folder is 0700 and its database
files 0600, whatever the umask (older workspaces are tightened when opened).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .atomic import atomic_write_json, read_json
from .errors import WorkspaceError
from .paths import workspaces_root

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FOLDERS = ("documents", "chunks", "index", "datasets", "adapters", "evals", "chats", "jobs", "deployments", "reports")
META_FILE = "workspace.json"
DB_FILE = "ragtune.sqlite3"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
CORE_SCHEMA = [
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise WorkspaceError(
            f"'{name}' is not a valid workspace name: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return name


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        meta = read_json(self.root / META_FILE)
        if meta is None:
            raise WorkspaceError(f"{self.root} is not a ragtune workspace (no {META_FILE}).")
        self.meta = meta
        self._make_private()
        self.migrate("core", CORE_SCHEMA)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, name: str, root: Path | None = None, exist_ok: bool = False, **meta) -> "Workspace":
        folder = Path(root or workspaces_root()) / validate_name(name)
        if (folder / META_FILE).exists():
            if exist_ok:
                return cls(folder)
            raise WorkspaceError(f"A workspace named '{name}' already exists in {folder.parent}.")
        folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        for sub in FOLDERS:
            (folder / sub).mkdir(mode=PRIVATE_DIR, exist_ok=True)
        atomic_write_json(folder / META_FILE, {"name": name, "created_at": time.time(), **meta})
        return cls(folder)

    @classmethod
    def open(cls, name_or_path: str | Path, root: Path | None = None, create: bool = False) -> "Workspace":
        """Open by name (under the workspaces root) or by folder path."""
        candidate = Path(name_or_path).expanduser()
        if (candidate / META_FILE).exists():
            return cls(candidate)
        if isinstance(name_or_path, str) and NAME_RE.match(name_or_path):
            folder = Path(root or workspaces_root()) / name_or_path
            if (folder / META_FILE).exists():
                return cls(folder)
            if create:
                return cls.create(name_or_path, root=root)
        if isinstance(name_or_path, str) and NAME_RE.match(name_or_path):
            raise WorkspaceError(f"No workspace '{name_or_path}'. Create it with `ragtune workspace create "
                                 f"{name_or_path}` or pass an existing workspace folder.")
        # A folder path is not a workspace name: suggest a name that `workspace create` accepts.
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", candidate.name).strip("-_")[:64] or "my-project"
        slug = slug if NAME_RE.match(slug) else "my-project"
        raise WorkspaceError(f"No workspace at {candidate}. Create one with `ragtune workspace create {slug}`, "
                             f"then pass `-w {slug}`.")

    @property
    def name(self) -> str:
        return self.meta["name"]

    def rename(self, new_name: str) -> "Workspace":
        validate_name(new_name)
        target = self.root.parent / new_name
        if target.exists():
            raise WorkspaceError(f"A workspace named '{new_name}' already exists.")
        self.root.rename(target)
        self.root = target
        self.meta["name"] = new_name
        atomic_write_json(target / META_FILE, self.meta)
        return self

    def delete(self) -> None:
        # Rename first so a crash mid-delete never leaves a half-workspace that still opens.
        trash = self.root.parent / f".deleted-{self.root.name}-{time.time_ns()}"
        self.root.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------ files
    def _make_private(self) -> None:
        """Folder 0700, database files 0600 (SQLite gives its -wal and -shm files the database's mode)."""
        _restrict(self.root, PRIVATE_DIR)
        if not self.db_path.exists():
            os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        for suffix in ("", "-wal", "-shm", "-journal"):
            _restrict(Path(f"{self.db_path}{suffix}"), PRIVATE_FILE)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p_resolved = p.resolve()
        if self.root not in p_resolved.parents and p_resolved != self.root:
            raise WorkspaceError(f"Refusing a path outside the workspace: {'/'.join(parts)}")
        return p

    # ------------------------------------------------------------ database
    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # creates the -wal and -shm files: the first write
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.OperationalError as exc:
            conn.close()
            if is_disk_full(exc):
                raise disk_full_error(self.name) from None
            raise
        return conn

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full) may already have rolled back
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def migrate(self, component: str, migrations: Sequence[str | Sequence[str]]) -> int:
        """Apply the migrations of `component` not applied yet; returns its schema version.

        Each migration is one SQL statement or a sequence of statements; all pending ones
        run in a single transaction, so a failure leaves the schema as it was.
        """
        with self.db() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_versions WHERE component=?", (component,)).fetchone()
            version = row["version"] if row else 0
            if version > len(migrations):
                raise WorkspaceError(
                    f"This workspace was written by a newer ragtune ({component} schema v{version}); upgrade ragtune."
                )
            for migration in migrations[version:]:
                # executescript() would commit mid-transaction, so statements run one by one.
                for statement in ([migration] if isinstance(migration, str) else migration):
                    conn.execute(statement)
            if version != len(migrations):  # opening a current workspace writes nothing (a full disk still opens)
                conn.execute("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)", (component, len(migrations)))
        return len(migrations)

    def schema_version(self, component: str) -> int:
        with self.db() as conn:
            row = conn.execute("SELECT version FROM schema_versions WHERE component=?", (component,)).fetchone()
        return row["version"] if row else 0

    def get_setting(self, key: str, default=None):
        import json

        with self.db() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set_setting(self, key: str, value) -> None:
        import json

        with self.db() as conn:
            conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    def __repr__(self) -> str:
        return f"Workspace({self.name!r}, {str(self.root)!r})"


_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, or SQLite's SQLITE_FULL, or the SQLITE_IOERR it reports when its WAL cannot grow."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "database or disk is full" in text or "disk i/o error" in text
    return False


def disk_full_error(name: str, stored: Sequence[str] = ()) -> WorkspaceError:
    """The sentence for a full disk; `stored`: the files an ingest committed before the disk filled up."""
    if not stored:
        return WorkspaceError(f"The disk holding workspace '{name}' is full or cannot be written, so nothing was "
                              "stored; free some space and try again.")
    shown = ", ".join(f"'{n}'" for n in stored[:5]) + (f" and {len(stored) - 5} more" if len(stored) > 5 else "")
    files = "file was" if len(stored) == 1 else "files were"
    return WorkspaceError(f"The disk holding workspace '{name}' filled up: {len(stored)} {files} stored ({shown}), "
                          "the rest were not; free some space and run the same ingest again (what is stored is "
                          "skipped).")


def _restrict(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) & ~mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass
    except PermissionError:  # not ours to change (a shared read-only copy): still usable
        pass


def list_workspaces(root: Path | None = None) -> list[str]:
    base = Path(root or workspaces_root())
    if not base.exists():
        return []
    return sorted(p.name for p in base.iterdir() if (p / META_FILE).exists() and not p.name.startswith("."))
