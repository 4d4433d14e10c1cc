"""Parse untrusted files in a child process that has a memory limit and a time limit.

A file can pass every cap of the gate and still be expensive to parse: 2 MB of ``<p>x</p>`` takes
BeautifulSoup 12 s and 300 MB, 20 MB (the upload size cap) about ten times that. So, as Apache Tika's
server and unstructured's API do, parsing runs in a separate process with limits:

- **memory**: the worker caps its own address space (``RLIMIT_AS``, where the system enforces it: Linux;
  elsewhere a warning is logged once and the time limit holds alone) at what it holds once started
  (about 20 MB of address space: the interpreter and :mod:`retrieval.formats`) plus ``memory_mb``; the parsers'
  own modules load under that budget. An allocation past it fails inside the worker (Python's
  MemoryError, libxml2's "Memory allocation failed"), the worker says so and is replaced;
- **time**: the parent waits ``timeout_s`` for each file's answer, then kills the worker's whole
  process group (SIGKILL) and starts a new one for the next file.

Either way the file's result is one sentence (a BadInputError), the batch goes on, and the caller
stores nothing of that file. A worker that dies (a crash in native code) is reported the same way.

One worker serves every file of a batch (``with ParseWorker(...) as worker: worker.parse(path)``):
starting one costs an interpreter (~0.1 s, started at once and overlapped with the gate's work on
the first file); a request and its answer cost about a millisecond. Answers are JSON, never pickle:
the worker reads hostile bytes, the parent trusts none of what it sends back beyond plain text.

The worker dies with its owner: ``PR_SET_PDEATHSIG`` (SIGKILL, Linux) set in the worker, which fires when
the thread that started it exits (it is the thread that runs the batch, and it closes the worker
first), and end-of-file on its stdin between files. It runs in a session of its own, so a Ctrl-C
reaches the CLI, which stops the worker itself. The worker is single-threaded, so PDFium's
thread-unsafety (``ragtune.pdfium_lock``) never meets another thread there.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ragtune.errors import BadInputError

from .formats import Block, ParsedDocument, parse_file, stream_file
from .parse_child import HEADER as _HEADER

log = logging.getLogger("ragtune.ingest")

MB = 1024 * 1024
START_TIMEOUT_S = 60.0   # the worker's own start, not counted in a file's time (a loaded machine: ~1 s)
BODY_S = 30.0            # to read an answer whose head came in time
CHECK_S = 0.25           # how often `check` is called while an answer is awaited
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
# What the worker runs, after the interpreter (the tests run a stand-in whose parser never returns).
CHILD = ("-m", "retrieval.parse_child")


def size_text(mb: float) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 256 == 0 else f"{mb:g} MB"


class _Gone(Exception):
    """The worker's end of the pipe closed: it exited or was killed."""


class InProcessParser:
    """The same calls as ParseWorker, parsing in this process with no limit (a benchmark's baseline)."""

    def __init__(self):
        self._call = None

    def submit(self, path, **options) -> None:
        self._call = (path, options)

    def result(self) -> ParsedDocument:
        return _collect(self.stream())

    def stream(self) -> "ParsedStream":
        (path, options), self._call = self._call, None

        def batches():
            doc, blocks = stream_file(path, **options)
            for block in blocks:
                yield [block]
            return doc

        return ParsedStream(batches())

    def parse(self, path, **options) -> ParsedDocument:
        return parse_file(path, **options)

    def abandon(self) -> None:
        self._call = None

    def close(self) -> None:
        self._call = None


class ParseWorker:
    """A parsing child process under ``memory_mb`` of address space and ``timeout_s`` per file
    (None: no limit); replaced after it is killed. Use as a context manager, from one thread."""

    def __init__(self, memory_mb: float | None = 2048.0, timeout_s: float | None = 120.0,
                 check: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.check = check  # called while waiting for an answer (4 times a second): raise to stop (a job's cancel)
        self.clock = clock  # seconds, for the time limits (a test passes a clock it moves itself)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._ready = False
        self._pending = False
        self._broken = False
        self._deadline: float | None = None
        self.started = 0          # worker processes started (a killed one is replaced)
        self.base_mb: float | None = None  # what the worker held once started, before its limit
        self.peak_mb = 0.0        # the highest resident size a worker reached on a file it read

    # ------------------------------------------------------------ life

    def start(self) -> None:
        """Start the worker if none runs; returns at once (its start overlaps the caller's work)."""
        if self._proc is not None:
            return
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        argv = [sys.executable, *CHILD, "--parent", str(os.getpid()),
                "--memory-mb", str(self.memory_mb or 0)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      bufsize=0, start_new_session=True, env=env, close_fds=True)
        self._ready = False
        self._pending = False
        self._broken = False
        self._deadline: float | None = None
        self.started += 1

    def close(self) -> None:
        """Stop the worker: end of input (it exits at once), or its group killed if it does not."""
        proc = self._proc
        if proc is None:
            return
        if self._pending:  # abandoned mid-file (cancel, an error elsewhere): no need to wait for it
            self.abandon()
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self._kill()

    def abandon(self) -> None:
        """Drop the file being read (its stream was left part-way): the worker is stopped, and the next
        file starts a new one."""
        if self._pending:
            self._pending = False
            self._kill()

    def __enter__(self) -> "ParseWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _kill(self) -> int | None:
        """Kill the worker's process group and reap it; returns its exit status."""
        proc, self._proc = self._proc, None
        self._ready = self._broken = False
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        code = proc.wait()
        for f in (proc.stdin, proc.stdout, self._stderr):
            try:
                f.close()
            except OSError:
                pass
        self._stderr = None
        return code

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            return self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, AttributeError, ValueError):
            return ""

    # ------------------------------------------------------------ parsing

    def parse(self, path: str | Path, *, max_pages: int | None = None, strip_repeats: bool = True,
              pdf_tables: bool = False) -> ParsedDocument:
        """``formats.parse_file`` in the worker; BadInputError with one sentence when it is refused,
        passes a limit or the worker dies (then the next call starts a new worker)."""
        self.submit(path, max_pages=max_pages, strip_repeats=strip_repeats, pdf_tables=pdf_tables)
        return self.result()

    def submit(self, path: str | Path, *, max_pages: int | None = None, strip_repeats: bool = True,
               pdf_tables: bool = False) -> None:
        """Send one file to the worker and return at once; ``result()`` waits for its answer.
        The file's time runs from here (or from the worker's start, if it was still starting)."""
        if self._pending:
            raise RuntimeError("the parse worker is still reading the previous file")
        self.start()
        request = json.dumps({"path": str(path), "max_pages": max_pages, "strip_repeats": strip_repeats,
                              "pdf_tables": pdf_tables}).encode() + b"\n"
        self._pending = True
        self._deadline = self.clock() + self.timeout_s if self.timeout_s and self._ready else None
        try:
            self._proc.stdin.write(request)  # read by the worker once it has started
        except BrokenPipeError:
            self._broken = True

    def result(self) -> ParsedDocument:
        """The file's whole document (for a file whose blocks fit in memory; ingest uses ``stream``)."""
        return _collect(self.stream())

    def stream(self) -> "ParsedStream":
        """The answer for the file sent: its blocks batch by batch as the worker sends them, then its
        document. The file's time limit counts the time spent waiting for the worker, not the time the
        caller spends between batches (chunking them); a limit passed, a refusal or the worker's death
        is a BadInputError raised while the batches are read (what came before it must be dropped)."""
        if not self._pending:
            raise RuntimeError("no file was sent to the parse worker")
        self._pending = False
        return ParsedStream(self._batches())

    def _batches(self):
        budget = None  # seconds of the file's time limit left, once its first message came
        while True:
            self._pending = True  # abandoned between batches: close() kills the worker
            waited_from = self.clock()
            try:
                if self._broken:
                    raise _Gone()
                if not self._ready:
                    ready_at = self._wait_ready()
                    if self.timeout_s:
                        self._deadline = ready_at + self.timeout_s
                if not self.timeout_s:
                    deadline = None
                elif budget is None:
                    deadline = self._deadline
                else:
                    deadline = waited_from + budget
                reply = self._read_reply(deadline)
            except _Gone:
                self._pending = False
                raise self._died() from None
            except BaseException:  # stopped while waiting (a cancel): the file is abandoned with its worker
                self._pending = False
                self._kill()
                raise
            if reply is None:
                self._pending = False
                self._kill()
                raise BadInputError(f"parsing it took more than {self.timeout_s:g} s, the time limit for one file, "
                                    "so it was stopped; nothing of it was stored")
            if deadline is not None:
                budget = max(0.0, deadline - self.clock())
            if "blocks" in reply:
                yield _blocks(reply["blocks"])
                continue
            self._pending = False
            if isinstance(reply.get("peak_mb"), (int, float)):
                self.peak_mb = max(self.peak_mb, float(reply["peak_mb"]))
            if "doc" in reply:
                return _document(reply["doc"])
            if "refused" in reply:
                raise BadInputError(reply["refused"])
            if reply.get("memory"):
                self._kill()  # its heap may be in any state: the next file gets a fresh worker
                raise BadInputError(self._memory_sentence())
            raise BadInputError(f"unexpected error while reading it ({reply.get('error', 'no answer')})")

    def _memory_sentence(self) -> str:
        if self.memory_mb:
            return (f"parsing it needed more than {size_text(self.memory_mb)} of memory, the limit for one file, "
                    "so it was stopped; nothing of it was stored")
        return "parsing it ran out of memory, so it was stopped; nothing of it was stored"

    def _died(self) -> Exception:
        tail = self._stderr_tail()
        starting = not self._ready
        code = self._kill()
        if starting:
            return RuntimeError(f"the parsing process did not start (exit status {code}): {tail[-300:]}")
        if tail:
            log.warning("parse worker died (status %s): %s", code, tail[-500:])
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
        else:
            how = f"exit code {code}"
        limit = f" (it may have passed the {size_text(self.memory_mb)} memory limit)" if self.memory_mb else ""
        return BadInputError(f"the parser stopped while reading it ({how}){limit}; nothing of it was stored")

    def _wait_ready(self) -> float:
        """Wait for the worker's first message; returns when it was ready."""
        hello = self._read_reply(self.clock() + START_TIMEOUT_S)  # _Gone: it died starting
        if hello is None or not hello.get("ready"):
            self._kill()
            raise RuntimeError(f"the parsing process did not start within {START_TIMEOUT_S:g} s")
        self.base_mb = hello.get("base_mb")
        if self.memory_mb and hello.get("memory_capped") is False:
            _warn_uncapped_once()
        self._ready = True
        at, now = hello.get("at"), self.clock()
        # The worker says when it was ready on CLOCK_MONOTONIC (system-wide): comparable when that is this clock.
        if self.clock is time.monotonic and isinstance(at, (int, float)):
            return min(float(at), now)
        return now

    def _read_reply(self, deadline: float | None) -> dict | None:
        """The next answer, or None when the deadline passed first. An answer that came in time is taken
        however late it is read; once its head has come, the rest gets at least BODY_S more."""
        head = self._read_exact(_HEADER.size, deadline)
        if head is None:
            return None
        body_deadline = None if deadline is None else max(deadline, self.clock() + BODY_S)
        body = self._read_exact(_HEADER.unpack(head)[0], body_deadline)
        return None if body is None else json.loads(body)

    def _read_exact(self, n: int, deadline: float | None) -> bytes | None:
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            wait = None if deadline is None else max(0.0, deadline - self.clock())
            if self.check is not None:
                self.check()
                wait = CHECK_S if wait is None else min(wait, CHECK_S)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                if deadline is not None and self.clock() >= deadline:
                    return None
                continue
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise _Gone()
            buf += chunk
        return bytes(buf)


@functools.cache
def _warn_uncapped_once() -> None:
    log.warning("this system does not let the parse worker cap its memory (RLIMIT_AS): files are parsed "
                "under the time limit only")


class ParsedStream:
    """A parsed file's blocks in batches (iterate once), then ``document``: its kind, pages, title and
    warnings, set once the last batch has been read."""

    def __init__(self, batches):
        self._batches = batches
        self.document: ParsedDocument | None = None

    def __iter__(self):
        self.document = yield from self._batches


def _collect(stream: ParsedStream) -> ParsedDocument:
    blocks = [block for batch in stream for block in batch]
    stream.document.blocks = blocks
    return stream.document


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _page(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _blocks(rows: list) -> list[Block]:
    return [Block(str(t), _page(p), _text(s), str(k)) for t, p, s, k in rows]


def _document(d: dict) -> ParsedDocument:
    warnings = [str(w) for w in d.get("warnings") or []]
    return ParsedDocument(str(d["kind"]), [], _page(d.get("pages")), _text(d.get("title")), warnings)
