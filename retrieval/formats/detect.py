"""The format of a file judged by its content (magic bytes, zip members, markup), never by its name alone."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from ragtune.errors import BadInputError

from .encoding import decode_bytes

# Extensions that promise a specific binary container: the content must agree.
_BINARY_EXT = {".pdf": "pdf", ".docx": "docx", ".pptx": "pptx"}
_TEXT_EXT = {".md": "md", ".markdown": "md", ".txt": "txt", ".text": "txt", ".csv": "csv", ".tsv": "csv",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".html": "html", ".htm": "html", ".xhtml": "html",
             ".eml": "eml", ".rtf": "rtf", ".rst": "txt", ".log": "txt"}


def detect_kind(path: Path, head: bytes) -> str:
    """The format of a file judged by its bytes; the extension only breaks ties between text formats."""
    ext = path.suffix.lower()
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile:
            raise BadInputError("it looks like a zip-based Office file but the archive is damaged") from None
        if "word/document.xml" in names:
            return "docx"
        if "ppt/presentation.xml" in names:
            return "pptx"
        raise BadInputError("it is a zip archive, not a DOCX or PPTX document")
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith((b"\xd0\xcf\x11\xe0",)):
        raise BadInputError("it is a legacy Microsoft Office (.doc/.ppt/.xls) file: save it as DOCX/PPTX or PDF")
    import filetype

    guess = filetype.guess(head)
    if guess is not None and guess.mime.split("/")[0] in ("image", "video", "audio", "application"):
        raise BadInputError(f"it is a {guess.mime} file, which holds no text ragtune can read")
    if b"\x00" in head[:8192] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BadInputError("it is a binary file, not a document ragtune can read")
    text = decode_bytes(head, partial=True)
    stripped = text.lstrip().lower()
    claimed = _BINARY_EXT.get(ext)
    if claimed:
        what = "HTML" if stripped.startswith(("<!doctype html", "<html")) else "plain text"
        raise BadInputError(f"its name says {claimed.upper()} but the content is {what}, not a {claimed.upper()} file")
    if ext == ".eml" or _looks_like_email(text):
        return "eml"
    if stripped.startswith(("<!doctype html", "<html", "<?xml")) or re.search(r"<(body|div|p|table|h[1-6])[\s>]", stripped[:4000]):
        return "html"
    if ext in (".jsonl", ".ndjson") or (stripped.startswith("{") and _looks_like_jsonl(text)):
        return "jsonl"
    return _TEXT_EXT.get(ext, "txt")


def _looks_like_email(text: str) -> bool:
    headers = re.findall(r"^(From|To|Subject|Date|MIME-Version|Message-ID|Received):", text[:4000], re.M | re.I)
    return len({h.lower() for h in headers}) >= 3


def _looks_like_jsonl(text: str) -> bool:
    lines = [ln for ln in text.splitlines()[:-1] if ln.strip()][:5]  # the last may be cut mid-line
    try:
        return bool(lines) and all(isinstance(json.loads(ln), dict) for ln in lines)
    except json.JSONDecodeError:
        return False
