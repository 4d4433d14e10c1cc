"""The document store of a workspace: originals in documents/, parsed blocks in chunks/, rows in SQLite.

Files are written under a temporary ``.part-<pid>-`` name, the row is committed, then the files are
renamed: a crash or a full disk never leaves a file without its row for long, and
:func:`clean_leftovers` (run when the store is opened) finishes or removes what was left.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from ragtune.atomic import atomic_write_json, read_json
from ragtune.errors import BadInputError
from ragtune.jobs import pid_alive

from .formats import Block

MIGRATIONS = [
    [
        """CREATE TABLE retrieval_documents (
            doc_id TEXT PRIMARY KEY, name TEXT NOT NULL, mime TEXT NOT NULL, kind TEXT NOT NULL,
            pages INTEGER, size INTEGER NOT NULL, title TEXT, stored_path TEXT NOT NULL,
            added_at REAL NOT NULL, chunking TEXT NOT NULL)""",
        "CREATE INDEX retrieval_documents_name ON retrieval_documents(name)",
        """CREATE TABLE retrieval_chunks (
            chunk_id TEXT PRIMARY KEY,
            doc_id TEXT NOT NULL REFERENCES retrieval_documents(doc_id) ON DELETE CASCADE,
            ord INTEGER NOT NULL, text TEXT NOT NULL, page INTEGER, section TEXT,
            tokens INTEGER NOT NULL, overlap_chars INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX retrieval_chunks_doc ON retrieval_chunks(doc_id, ord)",
        """CREATE TABLE retrieval_embeddings (
            model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, key))""",
    ],
]


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    doc: str                 # file name as uploaded
    text: str
    page: int | None         # 1-based, for paged formats
    section: str | None
    tokens: int
    ord: int = 0
    title: str | None = None  # the document's title, for the context line
    overlap_chars: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PART_PREFIX = ".part-"
_STORED_NAME = re.compile(r"^[0-9a-f]{24}(\.|$)")
_OLD_TMP_AGE_S = 3600


def open_store(ws) -> None:
    ws.migrate("retrieval", MIGRATIONS)
    clean_leftovers(ws)


def part_path(final: Path) -> Path:
    """Where `final` is written before its row is committed (the suffix is kept, parsers read it).

    The name carries the writer's pid (leftovers of live processes are never touched) and a random
    token (two threads of one server may store the same content at once).
    """
    return final.with_name(f"{PART_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{final.name}")


def clean_leftovers(ws) -> None:
    """Rename committed `.part-` files of dead processes into place; delete every file with no row."""
    entries = [p for sub in ("documents", "chunks") if (folder := ws.root / sub).is_dir() for p in folder.iterdir()]
    if not entries:
        return
    # Listed before the rows are read: a stored name present in the listing was committed before the read.
    conn = ws.connect()
    try:
        committed = {r["doc_id"] for r in conn.execute("SELECT doc_id FROM retrieval_documents")}
    finally:
        conn.close()
    for path in entries:
        name = path.name
        try:
            if name.startswith(PART_PREFIX):
                pid, _, rest = name[len(PART_PREFIX):].partition("-")
                final_name = rest.partition("-")[2]
                if not pid.isdigit() or pid_alive(int(pid)):
                    continue
                final = path.with_name(final_name)
                if final_name.split(".")[0] in committed and not final.exists():
                    os.replace(path, final)
                else:
                    path.unlink()
            elif _STORED_NAME.match(name) and path.is_file() and name.split(".")[0] not in committed:
                path.unlink()
            elif name.startswith(".") and name.endswith(".tmp") and time.time() - path.stat().st_mtime > _OLD_TMP_AGE_S:
                path.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def chunk_id(doc_id: str, ord_: int, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\0{ord_}\0{text}".encode()).hexdigest()[:24]


def blocks_path(ws, doc_id: str) -> Path:
    return ws.path("chunks", f"{doc_id}.blocks.json")


def save_blocks(ws, doc_id: str, blocks: list[Block], title: str | None) -> None:
    atomic_write_json(blocks_path(ws, doc_id), {"title": title, "blocks": [asdict(b) for b in blocks]})


def load_blocks(ws, doc_id: str) -> list[Block]:
    data = read_json(blocks_path(ws, doc_id))
    if data is None:
        raise BadInputError(f"The parsed text of document {doc_id} is missing; delete it and ingest the file again.")
    return [Block(**b) for b in data["blocks"]]


def list_documents(ws) -> list[dict]:
    open_store(ws)
    with ws.db() as conn:
        rows = conn.execute(
            """SELECT d.doc_id, d.name, d.mime, d.kind, d.pages, d.size, d.title, d.added_at,
                      COUNT(c.chunk_id) AS chunks
               FROM retrieval_documents d LEFT JOIN retrieval_chunks c ON c.doc_id = d.doc_id
               GROUP BY d.doc_id ORDER BY d.added_at, d.name""").fetchall()
    return [dict(r) for r in rows]


def get_document(ws, doc_id_or_name: str) -> dict:
    open_store(ws)
    with ws.db() as conn:
        row = conn.execute("SELECT * FROM retrieval_documents WHERE doc_id=? OR name=? ORDER BY added_at DESC",
                           (doc_id_or_name, doc_id_or_name)).fetchone()
    if row is None:
        raise BadInputError(f"No document '{doc_id_or_name}' in workspace '{ws.name}'. "
                            "See `ragtune documents list`.")
    return dict(row)


def delete_document(ws, doc_id: str) -> dict:
    """Remove a document and its chunks; the next build_index drops it from the index."""
    doc = get_document(ws, doc_id)
    with ws.db() as conn:
        conn.execute("DELETE FROM retrieval_chunks WHERE doc_id=?", (doc["doc_id"],))
        conn.execute("DELETE FROM retrieval_documents WHERE doc_id=?", (doc["doc_id"],))
    for p in (ws.root / doc["stored_path"], blocks_path(ws, doc["doc_id"])):
        Path(p).unlink(missing_ok=True)
    return doc


def _row_to_chunk(r) -> Chunk:
    return Chunk(chunk_id=r["chunk_id"], doc_id=r["doc_id"], doc=r["name"], text=r["text"], page=r["page"],
                 section=r["section"], tokens=r["tokens"], ord=r["ord"], title=r["title"],
                 overlap_chars=r["overlap_chars"])


_CHUNK_SELECT = """SELECT c.*, d.name, d.title FROM retrieval_chunks c
                   JOIN retrieval_documents d ON d.doc_id = c.doc_id"""


def document_chunks(ws, doc_id: str) -> list[Chunk]:
    doc = get_document(ws, doc_id)
    with ws.db() as conn:
        rows = conn.execute(_CHUNK_SELECT + " WHERE c.doc_id=? ORDER BY c.ord", (doc["doc_id"],)).fetchall()
    return [_row_to_chunk(r) for r in rows]


def all_chunks(ws) -> list[Chunk]:
    open_store(ws)
    with ws.db() as conn:
        rows = conn.execute(_CHUNK_SELECT + " ORDER BY d.added_at, d.name, c.ord").fetchall()
    return [_row_to_chunk(r) for r in rows]


def replace_chunks(conn, doc_id: str, drafts: Iterable, signature: str) -> int:
    """Store a document's chunks in place of its old ones; `drafts` is read once, one row at a time
    (a spilled file of a million chunks is never held as a list). Returns how many were stored."""
    conn.execute("DELETE FROM retrieval_chunks WHERE doc_id=?", (doc_id,))
    stored = 0

    def rows():
        nonlocal stored
        for i, d in enumerate(drafts):
            stored = i + 1
            yield (chunk_id(doc_id, i, d.text), doc_id, i, d.text, d.page, d.section, d.tokens, d.overlap_chars)

    conn.executemany("INSERT INTO retrieval_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.execute("UPDATE retrieval_documents SET chunking=? WHERE doc_id=?", (signature, doc_id))
    return stored

