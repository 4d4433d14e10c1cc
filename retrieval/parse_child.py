"""The parsing process of :mod:`retrieval.parse_worker` (``python -m retrieval.parse_child``).

Kept apart from its parent's side so that it starts on the fewest imports: the interpreter, the
parsers' entry module, and what is needed to talk on its pipes. It caps its own address space once
started, reads one JSON request a line on stdin, and answers each with length-prefixed JSON messages
on the stdout it had at start (the blocks in batches as they are parsed, then the document or why it
failed) (stdout itself then points at stderr, so a parser that prints cannot
corrupt an answer). It exits at end of input, after a MemoryError, or when its owner dies.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import struct
import sys
import time
from typing import Iterator

from ragtune.errors import BadInputError

from .formats import Block, ParsedDocument, stream_file

MB = 1024 * 1024
HEADER = struct.Struct(">Q")  # the length of the JSON answer that follows
_PR_SET_PDEATHSIG = 1


# The blocks go to the parent in messages of about this many characters: neither side ever holds the
# whole text of a big file as one message (a 200 MB text file's answer was 200 MB of JSON at once).
BATCH_CHARS = 1 * MB


def to_dict(doc: ParsedDocument) -> dict:
    """The document without its blocks (they went before it, in batches)."""
    return {"kind": doc.kind, "pages": doc.pages, "title": doc.title, "warnings": doc.warnings}


def _batches(blocks: Iterator[Block]) -> Iterator[list]:
    batch, chars = [], 0
    for b in blocks:
        batch.append([b.text, b.page, b.section, b.kind])
        chars += len(b.text)
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


_PROC_STATUS = "/proc/self/status"


def _proc_status(key: str) -> int | None:
    """A size from /proc/self/status in bytes (VmSize: address space, VmHWM: peak resident); None
    where there is no /proc (macOS)."""
    try:
        with open(_PROC_STATUS) as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def _address_space() -> int:
    size = _proc_status("VmSize")
    if size is None:
        import psutil  # only where there is no /proc: it costs the worker's start 10 ms

        size = psutil.Process().memory_info().vms
    return size


def _peak_resident() -> int:
    peak = _proc_status("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return peak


def _cap_address_space(memory_mb: float) -> tuple[int, bool]:
    """(what this process holds, whether the cap above it took): a system that refuses RLIMIT_AS
    leaves the time limit only."""
    base = _address_space()
    if memory_mb <= 0:
        return base, False
    cap = base + int(memory_mb * MB)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ValueError, OSError):
        return base, False
    return base, True


def _die_with(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: end of input still stops the worker between files
        pass
    if os.getppid() != parent:  # the owner died before the line above
        os._exit(1)


def _out_of_memory(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        text = str(exc).lower()
        if "memory allocation failed" in text or "out of memory" in text or "cannot allocate memory" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _send(channel, message: dict) -> None:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    channel.write(HEADER.pack(len(body)) + body)
    channel.flush()


def _serve(parent: int, memory_mb: float) -> None:
    _die_with(parent)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a parser that prints writes to stderr, never into an answer
    base, capped = _cap_address_space(memory_mb)
    _send(channel, {"ready": True, "base_mb": round(base / MB, 1), "memory_capped": capped, "at": time.monotonic()})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return  # the owner closed the pipe (done, or gone)
        request = json.loads(line)
        reply: dict | None = None
        short = False
        try:
            doc, blocks = stream_file(request["path"], max_pages=request.get("max_pages"),
                                      strip_repeats=request.get("strip_repeats", True),
                                      pdf_tables=request.get("pdf_tables", False))
            for batch in _batches(blocks):
                _send(channel, {"blocks": batch})
            reply = {"doc": to_dict(doc)}
        except BadInputError as exc:
            reply = {"refused": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - any failure is this file's, said in one line
            if _out_of_memory(exc):
                short = True
            else:
                reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        if short:  # outside the handler, so the frames holding the big objects are gone
            reply = {"memory": True}
        reply["peak_mb"] = round(_peak_resident() / MB, 1)
        try:
            _send(channel, reply)
        except MemoryError:
            reply = None
            _send(channel, {"memory": True})
        if short:
            return


def main(argv: list[str]) -> None:
    parent = int(argv[argv.index("--parent") + 1])
    memory_mb = float(argv[argv.index("--memory-mb") + 1])
    _serve(parent, memory_mb)


if __name__ == "__main__":
    main(sys.argv[1:])
