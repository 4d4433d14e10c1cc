"""Files are parsed in a child process with a memory and a time limit: past either it is killed, the
file's result is one sentence, nothing of it is stored, and the rest of the batch goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ragtune.errors import BadInputError
from ragtune.ingest_gate import IngestLimits
from retrieval import parse_worker
from retrieval.documents import list_documents
from retrieval.formats import parse_file
from retrieval.ingest import ingest_paths
from retrieval.parse_worker import ParseWorker

REPO = Path(__file__).resolve().parents[2]


def _paragraphs(path: Path, megabytes: float) -> Path:
    """HTML of bare paragraphs: under every cap of the gate, about 150 MB and 6 s to parse per MB."""
    path.write_text("<html><body>" + "<p>x</p>" * int(megabytes * 125_000) + "</body></html>")
    return path


@pytest.fixture
def batch(tmp_path):
    """A folder whose middle file is expensive to parse, between two small ones."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-notes.md").write_text("# Notes\n\nThe shuttle leaves at nine from the north gate.\n")
    (docs / "z-memo.txt").write_text("The cafeteria closes at three on Fridays.\n")
    return docs


@pytest.fixture
def workers(monkeypatch):
    """Every worker process started, by pid."""
    started: list[int] = []
    real_start = ParseWorker.start

    def start(self):
        fresh = self._proc is None
        real_start(self)
        if fresh:
            started.append(self._proc.pid)

    monkeypatch.setattr(ParseWorker, "start", start)
    return started


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _stored(ws) -> set[str]:
    return {p.name for sub in ("documents", "chunks") for p in ws.path(sub).iterdir()}


def _check_batch(ws, results, reason_part: str, workers: list[int]) -> None:
    assert [(r.name, r.status) for r in results] == [
        ("a-notes.md", "added"), ("big.html", "failed"), ("z-memo.txt", "added")]
    assert reason_part in results[1].reason and results[1].reason.endswith("nothing of it was stored")
    assert sorted(d["name"] for d in list_documents(ws)) == ["a-notes.md", "z-memo.txt"]
    stored = _stored(ws)
    assert not [n for n in stored if ".part" in n], stored  # the copy of the refused file is gone
    assert len(stored) == 4  # two documents, two blocks files
    # The worker that held the file was killed and a fresh one read the next file; none is left running.
    assert len(workers) == 2, workers
    assert all(_gone(pid) for pid in workers)


def test_a_file_past_the_memory_limit_is_stopped_and_the_batch_goes_on(workspace, batch, workers):
    _paragraphs(batch / "big.html", 2)  # about 300 MB to parse
    results = ingest_paths(workspace, [batch], limits=IngestLimits(parse_memory_mb=128))
    _check_batch(workspace, results, "parsing it needed more than 128 MB of memory, the limit for one file",
                 workers)


@pytest.fixture
def stalling(monkeypatch, tmp_path):
    """Workers whose parser never returns on a file starting with STALL; the marker file appears once one has
    stalled."""
    marker = tmp_path / "stalled"
    monkeypatch.setattr(parse_worker, "CHILD", (str(Path(__file__).with_name("stalling_parse_child.py")),))
    monkeypatch.setenv("RAGTUNE_TEST_STALL_MARKER", str(marker))
    return marker


def test_a_file_past_the_time_limit_is_killed_and_the_batch_goes_on(workspace, batch, workers, stalling):
    (batch / "big.html").write_text("STALL <html><body><p>a parse that never ends</p></body></html>")
    results = ingest_paths(workspace, [batch], limits=IngestLimits(parse_timeout_s=2))
    assert stalling.exists()
    _check_batch(workspace, results, "parsing it took more than 2 s, the time limit for one file", workers)


def test_an_upload_past_a_limit_stores_nothing(workspace, batch):
    _paragraphs(batch / "big.html", 2)
    with pytest.raises(BadInputError) as err:
        ingest_paths(workspace, [batch], limits=IngestLimits(parse_memory_mb=128), all_or_nothing=True)
    assert str(err.value).startswith("Upload refused, nothing was stored: 'big.html': parsing it needed more than "
                                     "128 MB of memory")
    assert list_documents(workspace) == [] and _stored(workspace) == set()


def test_a_worker_that_dies_is_reported_and_replaced(workspace, batch, workers, stalling):
    (batch / "big.html").write_text("STALL <html><body><p>a parse that never ends</p></body></html>")
    killer = threading.Thread(target=lambda: (_wait_for(stalling.exists), os.kill(workers[0], signal.SIGKILL)))
    killer.start()
    try:
        results = ingest_paths(workspace, [batch])  # no time limit of its own would end it: 120 s
    finally:
        killer.join()
    _check_batch(workspace, results, "the parser stopped while reading it (killed by SIGKILL)", workers)


def _wait_for(condition, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_the_worker_dies_with_its_owner(tmp_path):
    """The owner is SIGKILLed between files: its worker does not stay behind."""
    script = (
        "import sys, time\n"
        "from retrieval.parse_worker import ParseWorker\n"
        "w = ParseWorker(); w.parse(sys.argv[1]); print(w._proc.pid, flush=True); time.sleep(120)\n"
    )
    note = tmp_path / "note.md"
    note.write_text("# A note\n\nSome words.\n")
    owner = subprocess.Popen([sys.executable, "-c", script, str(note)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        worker_pid = int(owner.stdout.readline())
        assert not _gone(worker_pid, within=0.2)
        owner.kill()
        owner.wait()
        assert _gone(worker_pid), "the worker outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()


def test_the_worker_runs_where_there_is_no_proc(monkeypatch, tmp_path):
    """macOS has no /proc: the worker's sizes come from psutil and getrusage instead (it read
    /proc/self/status at start, and died there)."""
    code = "import sys, retrieval.parse_child as c; c._PROC_STATUS = '/nonexistent/status'; c.main(sys.argv[1:])"
    monkeypatch.setattr(parse_worker, "CHILD", ("-c", code))
    path = tmp_path / "memo.md"
    path.write_text("# Memo\n\nThe gate opens at six.\n")
    with ParseWorker(memory_mb=512) as worker:
        doc = worker.parse(path)
    assert [b.text for b in doc.blocks] == ["Memo", "The gate opens at six."] and doc.title == "Memo"
    assert worker.base_mb > 0 and worker.peak_mb > 0


def test_the_worker_reads_what_parse_file_reads(sample_docs):
    with ParseWorker() as worker:
        for path in sorted(p for p in sample_docs.iterdir() if p.is_file()):
            try:
                expected = parse_file(path)
            except BadInputError as exc:
                with pytest.raises(BadInputError, match=str(exc)[:40].replace("(", r"\(").replace(")", r"\)")):
                    worker.parse(path)
                continue
            assert worker.parse(path) == expected, path.name
        assert worker.started == 1


def test_limits_are_cli_options(capsys, workspace, batch):
    from app.cli import main

    _paragraphs(batch / "big.html", 2)
    code = main(["ingest", str(batch), "--parse-memory-mb", "128", "--workspace", str(workspace.root)])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed    big.html (parsing it needed more than 128 MB of memory" in out, out
    assert "2 added, 0 duplicate, 1 failed" in out
    assert main(["ingest", str(batch), "--parse-timeout-s", "0", "--workspace", str(workspace.root)]) == 2
    assert "--parse-timeout-s must be above 0" in capsys.readouterr().err


def test_size_text():
    assert parse_worker.size_text(2048) == "2 GB" and parse_worker.size_text(1024) == "1 GB"
    assert parse_worker.size_text(128) == "128 MB" and parse_worker.size_text(1500) == "1500 MB"
