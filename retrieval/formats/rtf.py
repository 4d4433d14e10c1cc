"""RTF: its text by striprtf, read as plain text."""

from __future__ import annotations

from pathlib import Path

from ragtune.errors import BadInputError

from .document import ParsedDocument
from .encoding import decode_bytes
from .text import parse_markdown_text


def parse_rtf(path: Path) -> ParsedDocument:
    from striprtf.striprtf import rtf_to_text

    try:
        text = rtf_to_text(decode_bytes(path.read_bytes()), errors="ignore")
    except Exception as exc:
        raise BadInputError(f"the RTF file cannot be read ({type(exc).__name__})") from None
    doc = parse_markdown_text(text, "txt")
    doc.kind = "rtf"
    return doc
