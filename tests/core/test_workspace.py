import os
import sqlite3
import subprocess
import sys

import pytest

from ragtune.atomic import atomic_directory, atomic_write_json, atomic_write_text, read_json
from ragtune.errors import WorkspaceError
from ragtune.workspace import Workspace, list_workspaces


def test_create_open_rename_delete(tmp_path):
    root = tmp_path / "ws"
    ws = Workspace.create("acme", root=root)
    assert (ws.root / "documents").is_dir() and ws.name == "acme"
    assert Workspace.open("acme", root=root).root == ws.root
    assert Workspace.open(str(ws.root)).name == "acme"
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.create("acme", root=root)
    ws.rename("acme2")
    assert list_workspaces(root) == ["acme2"]
    assert Workspace.open("acme2", root=root).name == "acme2"
    ws.delete()
    assert list_workspaces(root) == []
    with pytest.raises(WorkspaceError, match="No workspace"):
        Workspace.open("acme2", root=root)


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", ".hidden", "x" * 65, "name with space"])
def test_names_cannot_escape(tmp_path, bad):
    with pytest.raises(WorkspaceError):
        Workspace.create(bad, root=tmp_path)


def test_paths_cannot_escape(workspace):
    with pytest.raises(WorkspaceError):
        workspace.path("..", "..", "etc", "passwd")
    assert workspace.path("documents", "a.txt").parent == workspace.root / "documents"


def test_workspaces_are_isolated(tmp_path):
    a = Workspace.create("a", root=tmp_path)
    b = Workspace.create("b", root=tmp_path)
    a.set_setting("secret", {"k": 1})
    a.migrate("notes", ["CREATE TABLE notes (text TEXT)"])
    with a.db() as conn:
        conn.execute("INSERT INTO notes VALUES ('only in a')")
    assert b.get_setting("secret") is None
    assert b.schema_version("notes") == 0
    with pytest.raises(sqlite3.OperationalError):
        with b.db() as conn:
            conn.execute("SELECT * FROM notes")
    assert a.db_path != b.db_path


def test_migrations_are_versioned_and_transactional(workspace):
    assert workspace.migrate("x", ["CREATE TABLE t1 (a)"]) == 1
    assert workspace.migrate("x", ["CREATE TABLE t1 (a)", ["CREATE TABLE t2 (b)", "CREATE INDEX i2 ON t2(b)"]]) == 2
    assert workspace.schema_version("x") == 2
    with pytest.raises(sqlite3.OperationalError):  # the second statement fails: nothing applied
        workspace.migrate("x", ["CREATE TABLE t1 (a)", ["CREATE TABLE t2 (b)", "CREATE INDEX i2 ON t2(b)"],
                                ["CREATE TABLE t3 (c)", "SYNTAX ERROR"]])
    assert workspace.schema_version("x") == 2
    with workspace.db() as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "t3" not in tables
    with pytest.raises(WorkspaceError, match="newer ragtune"):
        workspace.migrate("x", ["CREATE TABLE t1 (a)"])


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    import ragtune.atomic as atomic

    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_atomic_write_survives_a_killed_writer(tmp_path):
    """A writer killed mid-write never leaves a truncated file: readers see the old or the new."""
    target = tmp_path / "big.txt"
    atomic_write_text(target, "old")
    code = (
        "import os; import ragtune.atomic as a\n"
        "a.os.replace = lambda *_: os._exit(9)\n"  # die after writing, before the rename
        "from ragtune.atomic import atomic_write_bytes\n"
        f"atomic_write_bytes({str(target)!r}, b'x' * 10_000_000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == 9
    assert target.read_text() == "old"


def test_atomic_directory_replaces_whole_folder(tmp_path):
    folder = tmp_path / "index"
    with atomic_directory(folder) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_directory(folder) as tmp:
            (tmp / "a").write_text("2")
            raise ValueError("build failed")
    assert (folder / "a").read_text() == "1"
    with atomic_directory(folder) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
