"""Markdown and plain text, read a bounded piece at a time: a 200 MB one-line file is never held whole."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator

from .document import BULLET, Block, ParsedDocument, heading_path
from .encoding import open_text

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"\s*(=+|-{3,})\s*")  # under a line of text, makes it a heading
_RULE = re.compile(r"\s*([-*_=]\s*){3,}")  # a horizontal rule

# A line longer than this is cut at a space into several, and a paragraph is closed once it holds this
# much: no block of a 200 MB one-line file is ever held whole (issue 24). No document of the shared
# corpora or the sample data comes near it, so they parse as before.
MAX_BLOCK_CHARS = 1_000_000
_READ_CHARS = 1 << 18      # a text file is read this many characters at a time


def parse_markdown_text(text: str, kind: str = "md") -> ParsedDocument:
    blocks = list(_markdown_blocks(_lines_of(io.StringIO(text, newline=None)), kind))
    title = next((b.text for b in blocks if b.kind == "heading"), None)
    return ParsedDocument(kind, blocks, title=title)


def _lines_of(stream) -> Iterator[str]:
    """The lines of a text stream opened with universal newlines, without their ends, read a bounded
    piece at a time; a line longer than MAX_BLOCK_CHARS comes as several, cut at a space."""
    held = ""
    for piece in iter(lambda: stream.readline(_READ_CHARS), ""):
        held += piece
        if held.endswith("\n"):
            yield held[:-1]
            held = ""
            continue
        while len(held) > MAX_BLOCK_CHARS:
            cut = held.rfind(" ", MAX_BLOCK_CHARS // 2, MAX_BLOCK_CHARS)
            cut = cut if cut > 0 else MAX_BLOCK_CHARS
            yield held[:cut]
            held = held[cut:].lstrip(" ")
    if held:
        yield held


def _markdown_blocks(lines: Iterator[str], kind: str) -> Iterator[Block]:
    """Markdown (or plain text, kind "txt": no headings) as blocks, one line of lookahead at a time."""
    headings: list[tuple[int, str]] = []
    para = _Paragraph()
    in_code = skip_underline = False
    line = next(lines, None)
    while line is not None:
        following = next(lines, None)
        if para.chars + len(line) > MAX_BLOCK_CHARS:  # a paragraph of a million characters
            yield from para.close(headings)
        fence = line.strip().startswith("```")
        if fence:
            in_code = not in_code
        if in_code or fence:  # code is kept as it is, blank lines and all
            para.add(line, len(line))
        elif skip_underline:
            skip_underline = False
        elif heading := _heading(line, following, kind, inside_paragraph=bool(para.lines)):
            level, title, skip_underline = heading
            yield from para.close(headings)
            if title:
                headings = [h for h in headings if h[0] < level] + [(level, title)]
                yield Block(title, None, heading_path(headings), "heading")
        elif not line.strip() or _RULE.fullmatch(line):  # blank or horizontal rule
            yield from para.close(headings)
        else:
            yield from para.add_row(line, headings)
        line = following
    yield from para.close(headings)


def _heading(line: str, following: str | None, kind: str, inside_paragraph: bool) -> tuple[int, str, bool] | None:
    """(level, title, whether `following` is its setext underline) when `line` is a Markdown heading."""
    if kind != "md":
        return None
    if m := _MD_HEADING.match(line):
        return len(m.group(1)), m.group(2).strip(), False
    if not inside_paragraph and line.strip() and following is not None and _SETEXT_UNDERLINE.fullmatch(following):
        return (1 if "=" in following else 2), line.strip(), True
    return None


class _Paragraph:
    """The lines of the block being read, closed into one block at a blank line, a heading, a change
    between paragraph, list and table rows, or before it would pass MAX_BLOCK_CHARS."""

    def __init__(self):
        self.lines: list[str] = []
        self.chars = 0
        self.kind = "paragraph"

    def add(self, line: str, chars: int) -> None:
        self.lines.append(line)
        self.chars += chars

    def add_row(self, line: str, headings: list[tuple[int, str]]) -> list[Block]:
        """Add a line of text; first closes the block when the line starts another kind (a list item's
        indented continuation stays in its list). Returns the block closed, if any."""
        stripped = line.strip()
        kind = "table" if stripped.startswith("|") else "list" if BULLET.match(stripped) else "paragraph"
        continues_item = self.kind == "list" and kind == "paragraph" and line.startswith(" ")
        closed = self.close(headings) if self.lines and kind != self.kind and not continues_item else []
        if not self.lines:
            self.kind = kind
        self.add(line.rstrip(), len(line))
        return closed

    def close(self, headings: list[tuple[int, str]]) -> list[Block]:
        """The block read so far (none when no line was), under the section `headings` open; then a new one."""
        if not self.lines:
            return []
        block = Block("\n".join(self.lines).strip(), None, heading_path(headings), self.kind)
        self.lines, self.chars, self.kind = [], 0, "paragraph"
        return [block]


def stream_text(path: Path, kind: str) -> tuple[ParsedDocument, Iterator[Block]]:
    """A Markdown or text file read a piece at a time: the document (its title set once its first
    heading is read) and its blocks, produced as the file is read."""
    doc = ParsedDocument(kind, [])

    def blocks() -> Iterator[Block]:
        with path.open("rb") as raw:
            for block in _markdown_blocks(_lines_of(open_text(raw, None)), kind):
                if doc.title is None and block.kind == "heading":
                    doc.title = block.text
                yield block

    return doc, blocks()
