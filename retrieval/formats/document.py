"""What every parser makes of a file: its blocks (heading, paragraph, list, table) with page and section."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

MIME = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "html": "text/html",
    "md": "text/markdown",
    "txt": "text/plain",
    "csv": "text/csv",
    "jsonl": "application/jsonl",
    "eml": "message/rfc822",
    "rtf": "application/rtf",
}


@dataclass
class Block:
    text: str
    page: int | None = None      # 1-based, for paged formats (PDF, slides)
    section: str | None = None   # heading path, e.g. "Benefits > Dental"
    kind: str = "paragraph"      # heading | paragraph | list | table


@dataclass
class ParsedDocument:
    kind: str                 # key of MIME
    blocks: list[Block]
    pages: int | None = None
    title: str | None = None
    warnings: list[str] = field(default_factory=list)  # parts skipped, said to the user

    @property
    def mime(self) -> str:
        return MIME[self.kind]

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


def heading_path(headings: list[tuple[int, str]]) -> str | None:
    """The section a block sits in, from its open headings (level, title): "Benefits > Dental"."""
    return " > ".join(h[1] for h in headings) or None


def collect(doc: ParsedDocument, blocks: Iterator[Block]) -> ParsedDocument:
    """A streamed document with its blocks read, whole."""
    doc.blocks = list(blocks)
    return doc


# A list item's mark at the start of a line: a bullet, "1." / "(a)" / "b)".
BULLET = re.compile(r"^\s*([•●▪◦‣∙·\-–*]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s+")
