"""Files and faults: private workspace files, and a full disk that says so and leaves no orphan file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ragtune.errors import WorkspaceError
from ragtune.workspace import Workspace


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the common default: files 0644, folders 0755
    yield
    os.umask(old)


def test_workspace_database_and_key_store_are_private(tmp_path, loose_umask, sample_docs):
    from retrieval.ingest import ingest_paths
    from serving.deploy import keys

    ws = Workspace.create("private", root=tmp_path / "workspaces")
    keys.create_key(ws, "web app")  # the key store lives in the workspace database
    ingest_paths(ws, [sample_docs / "faq.md"])
    db = ws.db_path
    reader = ws.connect()  # an open connection keeps the -wal and -shm files that hold recent writes
    try:
        reader.execute("SELECT COUNT(*) FROM deploy_keys").fetchone()
        assert {Path(f"{db}{s}").exists() for s in ("", "-wal", "-shm")} == {True}
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(f"{db}{suffix}")) == 0o600, suffix
    finally:
        reader.close()
    assert _mode(ws.root) == 0o700
    assert all(_mode(ws.root / sub) & 0o077 == 0 for sub in ("documents", "chunks", "chats"))
    assert all(_mode(p) == 0o600 for sub in ("documents", "chunks") for p in ws.path(sub).iterdir())


def test_an_older_world_readable_workspace_is_tightened_on_open(tmp_path, loose_umask):
    ws = Workspace.create("older", root=tmp_path / "workspaces")
    ws.root.chmod(0o755)
    ws.db_path.chmod(0o644)
    again = Workspace.open(ws.root)
    assert _mode(again.root) == 0o700 and _mode(again.db_path) == 0o600


# ------------------------------------------------------------------ a full disk (tiny_disk: tests/core/conftest.py)


def _fill(mount: Path, leave_bytes: int) -> Path:
    filler = mount / "filler"
    filler.unlink(missing_ok=True)
    vfs = os.statvfs(mount)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, vfs.f_bavail * vfs.f_frsize - leave_bytes))
    return filler


def _no_orphans(ws) -> None:
    from retrieval.documents import list_documents

    rows = {d["doc_id"] for d in list_documents(ws)}
    files = [p.name for sub in ("documents", "chunks") for p in ws.path(sub).iterdir()]
    assert not [n for n in files if n.startswith(".")], files  # no temporary left
    assert {n.split(".")[0] for n in files} == rows, (files, rows)  # every file has its row, every row its files
    assert len(files) == 2 * len(rows)


def test_a_full_disk_says_so_in_one_sentence_and_leaves_no_orphan(tiny_disk, sample_docs, capsys):
    from app.cli import main
    from retrieval.documents import list_documents
    from retrieval.ingest import ingest_paths

    ws = Workspace.create("full", root=tiny_disk / "workspaces")
    assert [r.status for r in ingest_paths(ws, [sample_docs / "faq.md"])] == ["added"]
    big = tiny_disk.parent / "handbook.md"
    big.write_text("\n\n".join(f"## Rule {i}\n\nRule {i}: badge {i * 7919 % 10007} opens door {i} of wing "
                               f"{i % 13}, staffed from {i % 24:02d}:00." for i in range(1500)))
    # From almost no room up to enough: every attempt stores the handbook whole or not at all.
    failures, stages = [], []
    for leave_kb in range(0, 4096, 96):
        filler = _fill(tiny_disk, leave_kb * 1024)
        try:
            results = ingest_paths(ws, [big])
        except WorkspaceError as exc:
            failures.append(str(exc))
            stages.append(type(exc.__context__).__name__ + ": " + str(exc.__context__))
        else:
            assert [r.status for r in results] == ["added"], results
            break
        finally:
            filler.unlink()
            _no_orphans(ws)
    else:
        pytest.fail("the handbook never fit on the disk")
    with capsys.disabled():
        print(f"full disk: {len(failures)} refusals before the handbook fit; raw errors: {sorted(set(stages))}")
    assert len(failures) >= 3, failures
    for message in set(failures):
        assert message.count(".") == 1 and message.endswith(".") and "\n" not in message, message
        assert "is full or cannot be written" in message and "nothing was stored" in message
    assert sorted(d["name"] for d in list_documents(ws)) == ["faq.md", "handbook.md"]

    # The CLI says the same sentence, on one line, with no traceback.
    filler = _fill(tiny_disk, 0)
    try:
        code = main(["ingest", str(sample_docs / "travel_policy.docx"), "--workspace", str(ws.root)])
    finally:
        filler.unlink()
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("error: The disk holding workspace 'full' is full"), err
    assert not any("Traceback" in line or "OperationalError" in line for line in err)
    _no_orphans(ws)


def test_leftovers_of_a_crash_are_finished_or_removed_on_open(workspace, sample_docs):
    from retrieval.documents import list_documents, open_store
    from retrieval.ingest import ingest_paths

    (added,) = ingest_paths(workspace, [sample_docs / "faq.md"])
    docs = workspace.path("documents")
    stored = docs / f"{added.doc_id}.md"
    # A crash after the commit, before the rename: the copy waits under the name of a dead process.
    dead = 2 ** 22 + 12345  # above the default pid_max
    stored.rename(docs / f".part-{dead}-0a1b2c3d-{stored.name}")
    # A crash of the old code: a file with no row; and a copy that never got its row.
    (docs / ("f" * 24 + ".pdf")).write_bytes(b"%PDF-1.4 orphan")
    (docs / f".part-{dead}-00000000-{'e' * 24}.md").write_text("never committed")
    open_store(workspace)
    assert sorted(p.name for p in docs.iterdir()) == [stored.name]
    assert stored.read_bytes() == (sample_docs / "faq.md").read_bytes()
    assert [d["name"] for d in list_documents(workspace)] == ["faq.md"]
