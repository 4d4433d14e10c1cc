"""Add files to a workspace: check, parse, chunk and store them; one bad file never stops the batch.

Identical content is stored once (the document id is a hash of the bytes). A file whose name is
already in the workspace with different content replaces the older version.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from ragtune.errors import BadInputError

from .chunking import ChunkingConfig, TokenCounter, chunk_blocks
from .documents import content_hash, delete_document, open_store, replace_chunks, save_blocks
from .formats import parse_file
from .settings import RetrievalSettings, load_settings


@dataclass
class IngestLimits:
    max_file_mb: float = 200.0
    max_pages: int = 5000
    max_files: int = 10_000


@dataclass
class IngestResult:
    name: str
    status: str  # "added" | "duplicate" | "failed"
    reason: str | None = None
    doc_id: str | None = None
    chunks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
        else:
            files.append(p)
    return files


def counter_for(settings: RetrievalSettings) -> TokenCounter:
    from ragtune.models import resolve_embedder

    return TokenCounter(resolve_embedder(settings.embedder).path)


def chunking_config(settings: RetrievalSettings) -> ChunkingConfig:
    return ChunkingConfig(settings.chunk_tokens, settings.overlap_tokens, settings.min_chunk_tokens)


def ingest_paths(ws, paths, *, limits: IngestLimits | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> list[IngestResult]:
    """Ingest files and folders (recursively); returns one result per file, in order."""
    limits = limits or IngestLimits()
    open_store(ws)
    settings = load_settings(ws)
    counter = counter_for(settings)
    files = _expand(paths)
    results: list[IngestResult] = []
    for i, path in enumerate(files):
        if progress:
            progress(i, len(files), path.name)
        if i >= limits.max_files:
            results.append(IngestResult(path.name, "failed", f"more than {limits.max_files} files in one batch; "
                                                             "ingest the rest separately"))
            continue
        try:
            results.append(_ingest_one(ws, path, limits, settings, counter))
        except BadInputError as exc:
            results.append(IngestResult(path.name, "failed", str(exc)))
        except Exception as exc:  # a parser bug must not stop the batch; say what happened
            results.append(IngestResult(path.name, "failed", f"unexpected error while reading it ({type(exc).__name__}: {exc})"))
    if progress:
        progress(len(files), len(files), "")
    return results


def _ingest_one(ws, path: Path, limits: IngestLimits, settings: RetrievalSettings, counter: TokenCounter) -> IngestResult:
    if not path.exists():
        raise BadInputError("no such file")
    if not path.is_file():
        raise BadInputError("it is not a regular file")
    size = path.stat().st_size
    if size > limits.max_file_mb * 1024 * 1024:
        raise BadInputError(f"the file is {size / 1048576:.1f} MB, more than the limit of {limits.max_file_mb:g} MB")
    data = path.read_bytes()
    doc_id = content_hash(data)
    with ws.db() as conn:
        same = conn.execute("SELECT name FROM retrieval_documents WHERE doc_id=?", (doc_id,)).fetchone()
        older = conn.execute("SELECT doc_id FROM retrieval_documents WHERE name=? AND doc_id<>?",
                             (path.name, doc_id)).fetchall()
    if same is not None:
        return IngestResult(path.name, "duplicate", f"same content as '{same['name']}', already stored", doc_id, 0)
    parsed = parse_file(path, max_pages=limits.max_pages)
    drafts = chunk_blocks(parsed.blocks, counter, chunking_config(settings))
    stored = Path("documents") / f"{doc_id}{path.suffix.lower()[:10]}"
    target = ws.path(str(stored))
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    title = describe(parsed, path.name)
    save_blocks(ws, doc_id, parsed.blocks, title)
    for row in older:  # a new version of a file with the same name replaces the old one
        delete_document(ws, row["doc_id"])
    with ws.db() as conn:
        conn.execute("INSERT INTO retrieval_documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (doc_id, path.name, parsed.mime, parsed.kind, parsed.pages, size, title, str(stored),
                      time.time(), settings.chunking_signature()))
        n = replace_chunks(conn, doc_id, drafts, settings.chunking_signature())
    notes = parsed.warnings + (["replaced the previous version of this file"] if older else [])
    reason = "; ".join(notes) or None
    return IngestResult(path.name, "added", reason, doc_id, n)


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
