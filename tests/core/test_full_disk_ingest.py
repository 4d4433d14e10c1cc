"""A disk that fills up during `ragtune ingest`: one sentence that names what was stored, a job that
reads failed with that sentence (not "the process is gone"), no traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from app.cli import main
from ragtune import jobs
from ragtune.errors import WorkspaceError
from ragtune.jobs import list_jobs
from ragtune.workspace import Workspace
from retrieval import ingest
from retrieval.documents import list_documents
from retrieval.ingest import ingest_paths

REAL_WRITE = ingest._write_synced


@pytest.fixture
def docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-small.md").write_text("# Small\n\nThe shuttle leaves at nine from the north gate.\n")
    (folder / "b-big.md").write_text("\n\n".join(f"## Rule {i}\n\nRule {i}: badge {i * 7919 % 10007} opens door {i} "
                                                 f"of wing {i % 13}." for i in range(15000)))  # about 1 MB
    (folder / "c-note.md").write_text("# Note\n\nThe cafeteria closes at three on Fridays.\n")
    return folder


@pytest.fixture
def no_room_for_big(monkeypatch):
    """The copy of b-big.md meets a full disk (ENOSPC), as a real one would at that write."""
    def write(path, data):
        if len(data) > 500_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_WRITE(path, data)

    monkeypatch.setattr(ingest, "_write_synced", write)


def _one_sentence_without_traceback(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("ingesting")]
    assert not any("Traceback" in ln or "OSError" in ln or "Errno" in ln for ln in lines), err
    assert len(lines) == 1, lines
    return lines[0]


def test_files_stored_before_the_disk_filled_are_named(workspace, docs, no_room_for_big):
    with pytest.raises(WorkspaceError) as err:
        ingest_paths(workspace, [docs])
    message = str(err.value)
    assert message == ("The disk holding workspace 'test' filled up: 1 file was stored ('a-small.md'), the rest were "
                       "not; free some space and run the same ingest again (what is stored is skipped).")
    assert [d["name"] for d in list_documents(workspace)] == ["a-small.md"]
    left = [p.name for sub in ("documents", "chunks") for p in workspace.path(sub).iterdir()]
    assert len(left) == 2 and not [n for n in left if n.startswith(".")], left  # no copy left behind


def test_an_upload_that_meets_a_full_disk_stored_nothing_and_says_so(workspace, docs, no_room_for_big):
    with pytest.raises(WorkspaceError, match="is full or cannot be written, so nothing was stored"):
        ingest_paths(workspace, [docs], all_or_nothing=True)
    assert list_documents(workspace) == []


def test_cli_job_reads_failed_with_the_sentence_even_when_its_outcome_needs_the_reserve(
        capsys, monkeypatch, workspace, docs, no_room_for_big):
    real = jobs.atomic_write_json

    def write(path, obj):  # the outcome only fits once the job's reserve is freed
        path = Path(path)
        if path.name == "status.json" and (path.parent / ".status-reserve").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(jobs, "atomic_write_json", write)
    code = main(["ingest", str(docs), "--workspace", str(workspace.root)])
    line = _one_sentence_without_traceback(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: The disk holding workspace 'test' filled up: 1 file was stored ('a-small.md')")
    (job,) = list_jobs(workspace, kind="ingest")
    assert job.status == "failed" and job.error == line.removeprefix("error: ")
    assert "process is gone" not in job.error
    assert not (job.dir / ".status-reserve").exists()
    assert [d["name"] for d in list_documents(workspace)] == ["a-small.md"]

    # Once there is room again, the same command stores the rest and skips what is stored.
    monkeypatch.setattr(ingest, "_write_synced", REAL_WRITE)
    assert main(["ingest", str(docs), "--workspace", str(workspace.root)]) == 0
    assert sorted(d["name"] for d in list_documents(workspace)) == ["a-small.md", "b-big.md", "c-note.md"]


# ------------------------------------------------------------------ a real full disk, where one can be mounted (tiny_disk: tests/core/conftest.py)


def test_a_real_disk_filling_up_mid_ingest(tiny_disk, docs, sample_docs, capsys):
    ws = Workspace.create("full", root=tiny_disk / "workspaces")
    assert main(["ingest", str(sample_docs / "faq.md"), "--workspace", str(ws.root)]) == 0
    capsys.readouterr()
    filler = tiny_disk / "filler"
    vfs = os.statvfs(tiny_disk)
    filler.write_bytes(b"\0" * (vfs.f_bavail * vfs.f_frsize - 500 * 1024))  # room for the small files, not b-big
    try:
        code = main(["ingest", str(docs), "--workspace", str(ws.root)])
    finally:
        filler.unlink()
    line = _one_sentence_without_traceback(capsys.readouterr().err)
    assert code == 2 and "filled up: 1 file was stored ('a-small.md')" in line, line
    job = list_jobs(ws, kind="ingest")[0]
    assert job.status == "failed" and job.error == line.removeprefix("error: ")
    assert sorted(d["name"] for d in list_documents(ws)) == ["a-small.md", "faq.md"]
    files = [p.name for sub in ("documents", "chunks") for p in ws.path(sub).iterdir()]
    assert len(files) == 4 and not [n for n in files if n.startswith(".")], files
