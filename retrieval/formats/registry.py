"""One reader per detected type, and the entry points that pick it: ``stream_file`` and ``parse_file``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ragtune.errors import BadInputError

from .detect import detect_kind
from .docx import parse_docx
from .document import Block, ParsedDocument, collect
from .eml import parse_eml
from .html import parse_html
from .pdf import parse_pdf
from .pptx import parse_pptx
from .records import stream_csv, stream_jsonl
from .rtf import parse_rtf
from .text import stream_text


@dataclass(frozen=True)
class ParseOptions:
    """What the caller asks of a parse, beyond the file (the ingest's limits and workspace settings)."""

    max_pages: int | None = None  # a PDF or presentation with more pages (slides) is refused
    strip_repeats: bool = True    # drop the running headers and footers of PDF pages
    pdf_tables: bool = False      # read ruled PDF tables with pdfplumber, a line per row naming its columns


# A reader: the document and its blocks, produced as the file is read (the document's title and
# warnings are final once every block is read).
Reader = Callable[[Path, ParseOptions], tuple[ParsedDocument, Iterator[Block]]]


def _whole(parse: Callable[[Path, ParseOptions], ParsedDocument]) -> Reader:
    """A parser that reads its file at once (PDF, Office, HTML, mail, RTF), as a reader."""

    def read(path: Path, options: ParseOptions) -> tuple[ParsedDocument, Iterator[Block]]:
        doc = parse(path, options)
        blocks, doc.blocks = iter(doc.blocks), []
        return doc, blocks

    return read


# Text, Markdown, CSV and JSONL are read a piece at a time (a 200 MB file is never held whole).
READERS: dict[str, Reader] = {
    "pdf": _whole(lambda path, o: parse_pdf(path, o.max_pages, o.strip_repeats, o.pdf_tables)),
    "docx": _whole(lambda path, o: parse_docx(path)),
    "pptx": _whole(lambda path, o: parse_pptx(path, o.max_pages)),
    "html": _whole(lambda path, o: parse_html(path)),
    "eml": _whole(lambda path, o: parse_eml(path)),
    "rtf": _whole(lambda path, o: parse_rtf(path)),
    "md": lambda path, o: stream_text(path, "md"),
    "txt": lambda path, o: stream_text(path, "txt"),
    "csv": lambda path, o: stream_csv(path),
    "jsonl": lambda path, o: stream_jsonl(path),
}


def parse_file(path: str | Path, *, max_pages: int | None = None, strip_repeats: bool = True,
               pdf_tables: bool = False) -> ParsedDocument:
    """Parse one file; raises BadInputError with the reason when it cannot be read."""
    return collect(*stream_file(path, max_pages=max_pages, strip_repeats=strip_repeats, pdf_tables=pdf_tables))


def stream_file(path: str | Path, *, max_pages: int | None = None, strip_repeats: bool = True,
                pdf_tables: bool = False) -> tuple[ParsedDocument, Iterator[Block]]:
    """Parse one file as its document and its blocks, the blocks produced as the file is read where
    the format allows it (text, Markdown, CSV, JSONL: a 200 MB file is never held whole) and all at
    once otherwise. The document's title and warnings are final once every block is read. BadInputError
    says why a file cannot be read, raised here or while its blocks are read."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError("it is not a file")
    if path.stat().st_size == 0:
        raise BadInputError("the file is empty (0 bytes)")
    with path.open("rb") as f:
        head = f.read(65536)
    kind = detect_kind(path, head)
    doc, blocks = READERS[kind](path, ParseOptions(max_pages, strip_repeats, pdf_tables))
    return doc, _with_text(blocks, kind)


def _with_text(blocks: Iterator[Block], kind: str) -> Iterator[Block]:
    """The blocks that hold text; BadInputError at the end when none did."""
    found = False
    for block in blocks:
        if block.text.strip():
            found = True
            yield block
    if not found:
        hint = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise BadInputError(f"no text was found in this {kind.upper()} file{hint}")
