"""Add files to a workspace: gate, parse, chunk and store them.

Every file first passes :mod:`ragtune.ingest_gate` (size, page and archive-bomb limits, no link out
of the folder, no special file); then it is parsed in a child process under a memory and a time limit
(:mod:`retrieval.parse_worker`; one worker per batch) and chunked as its blocks arrive (the blocks
written to their file, the chunks to a spill file: memory holds a batch, not the file); then it is
stored (files under temporary names, rows committed, files renamed). Two modes:

- ``all_or_nothing=True`` (the HTTP upload route): if any file is refused or fails to parse,
  nothing is stored and one BadInputError lists every failure;
- ``all_or_nothing=False`` (``ragtune ingest``, the builder app's drop zone, which shows a result per
  file): one bad file never stops the batch; each file gets its own result.

Identical content is stored once (the document id is a hash of the bytes); another process storing
the same content at the same time makes this one report a duplicate. A file whose name is already
in the workspace with different content replaces the older version.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ragtune.errors import BadInputError, RagtuneError, WorkspaceError
from ragtune.ingest_gate import Found, IngestLimits, gather, read_found, screen_bytes
from ragtune.jobs import JobCancelled
from ragtune.models import resolve_embedder
from ragtune.workspace import disk_full_error, is_disk_full

from .chunking import ChunkingConfig, DraftChunk, TokenCounter, iter_chunks
from .documents import blocks_path, content_hash, open_store, part_path, replace_chunks
from .formats import Block, ParsedDocument
from .parse_worker import InProcessParser, ParsedStream, ParseWorker
from .settings import RetrievalSettings, load_settings

__all__ = ["IngestLimits", "IngestResult", "ingest_paths", "describe"]


@dataclass
class IngestResult:
    name: str
    status: str  # "added" | "duplicate" | "failed"
    reason: str | None = None
    doc_id: str | None = None
    chunks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prepared:
    """A file that passed the gate, parsed and chunked; its copy and its blocks wait under `.part-`
    names, its chunks in a spill file."""

    index: int
    name: str
    doc_id: str
    size: int
    document: ParsedDocument  # kind, pages, title, warnings (the blocks are in `blocks_part`)
    drafts: "_DraftSpill"
    title: str
    stored: Path          # relative to the workspace
    part: Path            # the copy, renamed to `stored` once the row is committed
    blocks_part: Path     # the parsed blocks, renamed into chunks/ once the row is committed
    parts: list[Path] = field(default_factory=list)

    def discard(self) -> None:
        for p in self.parts:
            p.unlink(missing_ok=True)
        self.parts.clear()
        self.drafts.close()


class _DraftSpill:
    """A file's chunks between chunking and storing, in an unnamed temporary file beside the workspace's
    chunks rather than in memory: a 200 MB text makes about a million of them (1.5 GB as objects)."""

    def __init__(self, folder: Path):
        self._file = tempfile.TemporaryFile(dir=folder)  # gone with its last handle, even after a kill

    def add(self, draft: DraftChunk) -> None:
        row = [draft.text, draft.page, draft.section, draft.tokens, draft.overlap_chars]
        self._file.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")

    def __iter__(self) -> Iterator[DraftChunk]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield DraftChunk(*json.loads(line))

    def close(self) -> None:
        _close_dropping(self._file)


def _close_dropping(f) -> None:
    """Close a file whose content is being thrown away (a full disk fails the flush in close again)."""
    try:
        f.close()
    except OSError:
        pass


class _BlocksWriter:
    """A file's parsed blocks written to their `.part` file as they are read: the JSON document of
    ``documents.load_blocks``, written piece by piece (never the whole text at once), synced at the end."""

    def __init__(self, path: Path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20)
        self._file.write('{"blocks": [')
        self._separator = ""

    def add(self, block: Block) -> None:
        self._file.write(self._separator + json.dumps(asdict(block), ensure_ascii=False))
        self._separator = ", "

    def finish(self, title: str) -> None:
        self._file.write('], "title": ' + json.dumps(title, ensure_ascii=False) + "}\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def close(self) -> None:
        _close_dropping(self._file)


def counter_for(settings: RetrievalSettings) -> TokenCounter:
    return TokenCounter(resolve_embedder(settings.embedder).path)


def chunking_config(settings: RetrievalSettings) -> ChunkingConfig:
    return ChunkingConfig(settings.chunk_tokens, settings.overlap_tokens, settings.min_chunk_tokens)


def ingest_paths(ws, paths, *, limits: IngestLimits | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 all_or_nothing: bool = False,
                 on_result: Callable[[IngestResult], None] | None = None,
                 check: Callable[[], None] | None = None) -> list[IngestResult]:
    """Ingest files and folders (recursively); returns one result per file, in order.

    ``on_result(result)`` hears each file's result as soon as it is final (stored, duplicate or failed).
    ``check()`` is called while a file is being parsed (a few times a second): what it raises (a job's
    JobCancelled) stops the parse at once and the batch with it.

    A full disk stops the whole batch with one WorkspaceError sentence naming the files stored before it
    filled up; what was not committed is removed.
    """
    stored: list[str] = []
    try:
        return _ingest(ws, paths, limits or IngestLimits(), progress, all_or_nothing, on_result, stored, check)
    except Exception as exc:
        if _disk_full(exc):
            raise disk_full_error(ws.name, stored) from None
        raise


def _disk_full(exc: BaseException) -> bool:
    """A full disk met here (ENOSPC, SQLite's SQLITE_FULL), or under the WorkspaceError the workspace raises
    for one when it cannot open its database (raised ``from None``: the error it replaces is its context)."""
    return is_disk_full(exc) or (isinstance(exc, WorkspaceError) and exc.__context__ is not None
                                 and is_disk_full(exc.__context__))


def _ingest(ws, paths, limits: IngestLimits, progress, all_or_nothing: bool, on_result=None,
            stored: list[str] | None = None, check: Callable[[], None] | None = None) -> list[IngestResult]:
    found = gather(paths)
    parser: ParseWorker | InProcessParser = InProcessParser()
    if limits.parse_isolated and any(item.problem is None for item in found[:limits.max_files]):
        # started now: its interpreter starts while this process opens the store and screens the first file
        parser = ParseWorker(limits.parse_memory_mb, limits.parse_timeout_s, check)
        parser.start()
    try:
        batch = _Batch(ws, found, limits, parser, all_or_nothing, on_result, stored if stored is not None else [])
        return batch.run(progress)
    finally:
        parser.close()


@dataclass
class _Copied:
    """A file that passed the gate: its copy waits under a `.part-` name, sent to the parser."""

    index: int
    name: str
    doc_id: str
    size: int
    stored: Path
    part: Path


@dataclass
class _Later:
    """A file with the content of the one being parsed: judged again once that one is stored or failed."""

    index: int


@dataclass
class _Stop:
    """What stops the batch, met while copying the next file ahead: raised at that file's turn."""

    error: Exception


class _Batch:
    """A batch of files as a two-stage pipeline: while this process chunks and stores file i, the parser
    reads file i+1 (gated and copied first). Results are still decided and reported in order; `stored`
    hears the name of each file as it is committed."""

    def __init__(self, ws, found: list[Found], limits: IngestLimits, parser: ParseWorker | InProcessParser,
                 all_or_nothing: bool, on_result: Callable[[IngestResult], None] | None, stored: list[str]):
        self.ws, self.found, self.limits, self.parser = ws, found, limits, parser
        self.all_or_nothing, self.on_result, self.stored = all_or_nothing, on_result, stored
        open_store(ws)
        self.settings = load_settings(ws)
        self.counter = functools.cache(lambda: counter_for(self.settings))  # loaded once a file passes the gate
        self.results: list[IngestResult | None] = [None] * len(found)
        self.waiting: list[_Prepared] = []  # parsed, stored together at the end (all or nothing)
        self.copies: list[_Copied] = []  # copied and not yet stored or refused: their `.part` files go if this stops
        self.copied_bytes = 0

    def run(self, progress: Callable[[int, int, str], None] | None) -> list[IngestResult]:
        try:
            self._read_each_file(progress)
            failed = [r for r in self.results if r is not None and r.status == "failed"]
            if self.all_or_nothing and failed:
                raise BadInputError("Upload refused, nothing was stored: " +
                                    " ".join(f"'{r.name}': {r.reason.rstrip('.')}." for r in failed))
            self._store_waiting()
        finally:
            for item in self.waiting:
                item.discard()
            for copied in self.copies:
                copied.part.unlink(missing_ok=True)
        if progress:
            progress(len(self.found), len(self.found), "")
        return [r for r in self.results if r is not None]

    def _read_each_file(self, progress: Callable[[int, int, str], None] | None) -> None:
        """Each file gated, parsed and chunked in turn, then stored (or held back, all or nothing)."""
        ahead = None
        for i, item in enumerate(self.found):
            if progress:
                progress(i, len(self.found), item.name)
            current = self._gate(i, None) if i == 0 or isinstance(ahead, _Later) else ahead
            if isinstance(current, _Stop):
                raise current.error
            outcome = self._parse(current) if isinstance(current, _Copied) else current
            # The parser is idle now: it reads the next file while this one is chunked and stored.
            busy = current if isinstance(current, _Copied) else None
            ahead = self._gate(i + 1, busy) if i + 1 < len(self.found) else None
            if isinstance(outcome, IngestResult):
                self._report(i, outcome)
            elif self.all_or_nothing:
                self.waiting.append(outcome)
            else:
                _forget(self.copies, outcome)
                self._report(i, _store(self.ws, [outcome], self.settings)[0])

    def _store_waiting(self) -> None:
        self.copies.clear()  # all of them are in `waiting` now
        for item, result in zip(self.waiting, _store(self.ws, self.waiting, self.settings)):
            self.results[item.index] = result
            if result.status == "added":
                self.stored.append(result.name)

    def _report(self, i: int, result: IngestResult) -> None:
        self.results[i] = result
        if result.status == "added":
            self.stored.append(result.name)
        if self.on_result and not self.all_or_nothing:
            self.on_result(result)

    def _gate(self, i: int, busy: _Copied | None) -> _Copied | IngestResult | _Later | _Stop:
        """Gate, copy and send file i to the parser: a _Copied, a final IngestResult, _Later, or (while
        `busy` is read) an error that stops the batch once `busy` is stored (a full disk)."""
        try:
            return self._copy_and_submit(i, busy)
        except Exception as exc:
            if busy is None:
                raise
            return _Stop(exc)

    def _copy_and_submit(self, i: int, busy: _Copied | None) -> _Copied | IngestResult | _Later:
        item = self.found[i]
        try:
            if i >= self.limits.max_files:
                raise BadInputError(f"more than {self.limits.max_files} files in one batch; ingest the rest separately")
            if item.problem:
                raise BadInputError(item.problem)
            copied = self._copy(i, item, busy)
            if isinstance(copied, _Copied):
                self.copies.append(copied)
                self.parser.submit(copied.part, max_pages=self.limits.max_pages,
                                   strip_repeats=self.settings.strip_repeats, pdf_tables=self.settings.pdf_tables)
            return copied
        except Exception as exc:
            return _failed(item, exc)

    def _copy(self, index: int, item: Found, busy: _Copied | None) -> _Copied | IngestResult | _Later:
        """The file's bytes, checked, copied under a `.part-` name; or why it is not (a duplicate)."""
        data = read_found(item, self.limits)
        if not data:
            raise BadInputError("the file is empty (0 bytes)")
        screen_bytes(item.name, data, self.limits)
        doc_id = content_hash(data)
        if busy is not None and busy.doc_id == doc_id:
            return _Later(index)  # the same content is being read: its outcome decides this file's
        earlier = next((w for w in self.waiting if w.doc_id == doc_id), None)
        if earlier is not None:
            return IngestResult(item.name, "duplicate", f"same content as '{earlier.name}' in this batch", doc_id, 0)
        with self.ws.db() as conn:
            same = conn.execute("SELECT name FROM retrieval_documents WHERE doc_id=?", (doc_id,)).fetchone()
        if same is not None:
            return IngestResult(item.name, "duplicate", f"same content as '{same['name']}', already stored", doc_id, 0)
        self.copied_bytes += len(data)
        if self.limits.max_total_mb is not None and self.copied_bytes > self.limits.max_total_mb * 1048576:
            raise BadInputError(f"the files add up to more than the {self.limits.max_total_mb:g} MB limit per request")
        stored = Path("documents") / f"{doc_id}{Path(item.name).suffix.lower()[:10]}"
        part = part_path(self.ws.path(str(stored)))
        try:
            # The copy is parsed, not the original: what is stored is exactly what passed the gate.
            _write_synced(part, data)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return _Copied(index, item.name, doc_id, len(data), stored, part)

    def _parse(self, copied: _Copied) -> _Prepared | IngestResult:
        """The parser's answer for a copied file, chunked as its blocks come: the blocks go to their
        `.part` file and the chunks to a spill file, so memory holds one batch, not the file."""
        blocks_part = part_path(blocks_path(self.ws, copied.doc_id))
        drafts = _DraftSpill(self.ws.path("chunks"))
        writer: _BlocksWriter | None = None
        try:
            self.counter()  # the tokenizer loads while the parser reads (the first file: while the worker starts)
            stream = self.parser.stream()
            writer = _BlocksWriter(blocks_part)
            lead: list[Block] = []  # the opening blocks, which describe() reads
            for draft in iter_chunks(_written(stream, writer, lead), self.counter(), chunking_config(self.settings)):
                drafts.add(draft)
            document = stream.document
            title = describe(ParsedDocument(document.kind, lead, document.pages, document.title), copied.name)
            writer.finish(title)
        except BaseException as exc:
            self.parser.abandon()
            if writer is not None:
                writer.close()
            drafts.close()
            for p in (blocks_part, copied.part):
                p.unlink(missing_ok=True)
            _forget(self.copies, copied)
            if not isinstance(exc, Exception):
                raise
            return _failed(self.found[copied.index], exc)
        return _Prepared(copied.index, copied.name, copied.doc_id, copied.size, document, drafts, title,
                         copied.stored, copied.part, blocks_part, [copied.part, blocks_part])


def _written(stream: ParsedStream, writer: _BlocksWriter, lead: list[Block]) -> Iterator[Block]:
    """The parsed blocks as they come, each written to the file's blocks as it passes; the first six
    are kept in `lead`."""
    for batch in stream:
        for block in batch:
            if len(lead) < 6:
                lead.append(block)
            writer.add(block)
            yield block


def _failed(item: Found, exc: Exception) -> IngestResult:
    """A file's failure as its result; what stops the whole batch (a cancel, a full disk) is raised."""
    if isinstance(exc, BadInputError):
        return IngestResult(item.name, "failed", str(exc))
    if isinstance(exc, (RagtuneError, JobCancelled)) or is_disk_full(exc):
        raise exc
    # a parser bug must not stop the batch; say what happened
    return IngestResult(item.name, "failed", f"unexpected error while reading it ({type(exc).__name__}: {exc})")


def _forget(copies: list[_Copied], item) -> None:
    """`item`'s copy is no longer this batch's to remove (stored, or removed already)."""
    copies[:] = [c for c in copies if c.index != item.index]


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _store(ws, items: list[_Prepared], settings: RetrievalSettings) -> list[IngestResult]:
    """Store prepared files in one transaction: rows committed, then files renamed into place."""
    if not items:
        return []
    signature = settings.chunking_signature()
    results: list[IngestResult] = []
    replaced: list[Path] = []
    try:
        with ws.db() as conn:
            for item in items:
                same = conn.execute("SELECT name FROM retrieval_documents WHERE doc_id=?", (item.doc_id,)).fetchone()
                if same is not None:  # another ingest stored the same content meanwhile
                    results.append(IngestResult(item.name, "duplicate",
                                                f"same content as '{same['name']}', already stored", item.doc_id, 0))
                    continue
                older = conn.execute("SELECT doc_id, stored_path FROM retrieval_documents WHERE name=? AND doc_id<>?",
                                     (item.name, item.doc_id)).fetchall()
                for row in older:  # a new version of a file with the same name replaces the old one
                    conn.execute("DELETE FROM retrieval_chunks WHERE doc_id=?", (row["doc_id"],))
                    conn.execute("DELETE FROM retrieval_documents WHERE doc_id=?", (row["doc_id"],))
                    replaced += [ws.root / row["stored_path"], blocks_path(ws, row["doc_id"])]
                doc = item.document
                conn.execute("INSERT INTO retrieval_documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (item.doc_id, item.name, doc.mime, doc.kind, doc.pages, item.size, item.title,
                              str(item.stored), time.time(), signature))
                n = replace_chunks(conn, item.doc_id, item.drafts, signature)
                notes = doc.warnings + (["replaced the previous version of this file"] if older else [])
                results.append(IngestResult(item.name, "added", "; ".join(notes) or None, item.doc_id, n))
    except BaseException:
        for item in items:  # nothing was committed: the copies go
            item.discard()
        raise
    for item, result in zip(items, results):
        if result.status == "added":
            os.replace(item.part, ws.root / item.stored)
            os.replace(item.blocks_part, blocks_path(ws, item.doc_id))
        item.discard()
    for p in replaced:
        Path(p).unlink(missing_ok=True)
    return results


def describe(parsed, name: str) -> str:
    """A one-line description of the document: its title, then the short lines that open it.

    Many documents put what they are about in their first lines rather than in a title
    ("Contoso Electronics / Northwind Health Plus Plan", "Information about product 7 /
    TrailMaster X4 Tent"); the line is prepended to every chunk, so a chunk that never repeats
    the product or plan name can still be found by it.
    """
    base = " ".join((parsed.title or _title_from_name(name)).split())
    lead: list[str] = []
    took_text = False
    for block in parsed.blocks[:6] if parsed.kind not in ("csv", "jsonl") else []:
        text = " ".join(block.text.split())
        words = len(text.split())
        if text.lower() in base.lower():
            continue
        if words > 12 or len(lead) == 3 or (took_text and block.kind == "heading"):
            break
        lead.append(text)
        took_text = took_text or block.kind != "heading"
        if sum(len(x.split()) for x in lead) >= 12:
            break
    return base + (" - " + " ".join(lead) if lead else "")


def _title_from_name(name: str) -> str:
    stem = Path(name).stem.replace("_", " ").replace("-", " ")
    return " ".join(stem.split())
