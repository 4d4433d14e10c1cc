"""Read a document file into ordered text blocks (heading, paragraph, list, table) with page and section.

The file type comes from the content (magic bytes, zip members, markup), never from the name alone:
a ``.pdf`` that holds plain text is refused with that reason, a ``.txt`` that holds HTML is read as HTML.
Every failure is a :class:`BadInputError` whose message says what is wrong with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ragtune.errors import BadInputError
from ragtune.pdfium_lock import PDFIUM_LOCK

from .office import ParagraphStyles, check_docx, check_pptx, docx_table_rows

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
# Extensions that promise a specific binary container: the content must agree.
_BINARY_EXT = {".pdf": "pdf", ".docx": "docx", ".pptx": "pptx"}
_TEXT_EXT = {".md": "md", ".markdown": "md", ".txt": "txt", ".text": "txt", ".csv": "csv", ".tsv": "csv",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".html": "html", ".htm": "html", ".xhtml": "html",
             ".eml": "eml", ".rtf": "rtf", ".rst": "txt", ".log": "txt"}


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


# ------------------------------------------------------------------ detection

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
    text = _decode(head, partial=True)
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


def _decode(data: bytes, partial: bool = False) -> str:
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(data) - 4:  # a multi-byte character cut by the read window
            return data[: exc.start].decode("utf-8")
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise BadInputError("its text encoding could not be recognised")
    return str(best)


# ------------------------------------------------------------------ entry point

def parse_file(path: str | Path, *, max_pages: int | None = None, strip_repeats: bool = True,
               pdf_tables: bool = False) -> ParsedDocument:
    """Parse one file; raises BadInputError with the reason when it cannot be read."""
    return _collect(*stream_file(path, max_pages=max_pages, strip_repeats=strip_repeats, pdf_tables=pdf_tables))


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
    if kind in _STREAMED:
        doc, blocks = _STREAMED[kind](path)
    else:
        parser = _PARSERS[kind]
        if kind == "pdf":
            doc = parser(path, max_pages, strip_repeats, pdf_tables)
        else:
            doc = parser(path, max_pages) if kind == "pptx" else parser(path)
        blocks, doc.blocks = iter(doc.blocks), []
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


# ------------------------------------------------------------------ PDF

_BULLET = re.compile(r"^\s*([•●▪◦‣∙·\-–*]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s+")


def _repeat_key(line: str) -> str:
    if line.startswith(_TABLE_MARK):
        return ""  # a table's place on its page, never a running header
    return re.sub(r"\d+", "#", " ".join(line.lower().split()))


def strip_repeated_lines(pages: list[str], zone: int = 3) -> tuple[list[str], int]:
    """Drop running headers and footers: a line among the first or last `zone` lines of a page that
    recurs (numbers aside: "Page 2 of 4 NYC08CA055") on at least half the pages, three at least.

    The first page keeps its copy, since a running header often names the document ("Version 1.0,
    September 13, 2023") and the first page is where its identity is read. Returns (pages, lines dropped).
    """
    if len(pages) < 3:
        return pages, 0
    split = [p.replace("\r\n", "\n").replace("\r", "\n").split("\n") for p in pages]
    seen: dict[str, int] = {}
    for lines in split:
        filled = [ln for ln in lines if ln.strip()]
        for key in {_repeat_key(ln) for ln in filled[:zone] + filled[-zone:]}:
            seen[key] = seen.get(key, 0) + 1
    repeated = {k for k, n in seen.items() if n >= max(3, len(pages) / 2) and len(k) > 1}
    if not repeated:
        return pages, 0
    out, dropped = [pages[0]], 0
    for lines in split[1:]:
        filled = [i for i, ln in enumerate(lines) if ln.strip()]
        edge = set(filled[:zone] + filled[-zone:])
        keep = [ln for i, ln in enumerate(lines) if not (i in edge and _repeat_key(ln) in repeated)]
        dropped += len(lines) - len(keep)
        out.append("\n".join(keep))
    return out, dropped


def parse_pdf(path: Path, max_pages: int | None = None, strip_repeats: bool = True,
              tables: bool = False) -> ParsedDocument:
    """A PDF's blocks, parsed under the process-wide PDFium lock (PDFium is not thread-safe)."""
    with PDFIUM_LOCK:
        return _parse_pdf(path, max_pages, strip_repeats, tables)


def _parse_pdf(path: Path, max_pages: int | None, strip_repeats: bool, tables: bool) -> ParsedDocument:
    """Text layer from pypdfium2 (fast); ruled tables from pdfplumber, one line per row with its headers.

    pdfplumber (pdfminer) is about 20x slower than pypdfium2, so it only looks at pages that draw
    lines or boxes (pypdfium2 path objects): a page without any cannot hold a ruled table. The
    text inside an accepted table is taken from the table, the rest of the page from pypdfium2.
    """
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))  # opens owner-password-only PDFs (no user password)
    except pdfium.PdfiumError as exc:
        msg = str(exc).lower()
        if "password" in msg:
            raise BadInputError("the PDF is encrypted with a password; remove the password and upload it again") from None
        raise BadInputError(f"the PDF is damaged and cannot be opened ({exc})") from None
    warnings: list[str] = []
    plumber = None
    try:
        n = len(pdf)
        if max_pages and n > max_pages:
            raise BadInputError(f"the PDF has {n} pages, more than the limit of {max_pages}")
        texts: list[str] = []
        page_tables: list[list[Block]] = []
        for i in range(n):
            page = pdf[i]
            textpage = page.get_textpage()
            found: list[tuple[tuple[float, float, float, float], Block]] = []
            if tables and _draws_lines(page):
                if plumber is None:
                    plumber = _open_plumber(path, warnings)
                if plumber:
                    found = _plumber_tables(plumber, i, page, textpage, warnings)
            texts.append(_text_around(page, textpage, [bbox for bbox, _ in found]) if found
                         else textpage.get_text_bounded())
            page_tables.append([table for _, table in found])
            textpage.close()
            page.close()
        if strip_repeats:
            texts, _ = strip_repeated_lines(texts)
        blocks: list[Block] = []
        section: str | None = None
        for i, text in enumerate(texts):
            page_blocks, section = _pdf_page_blocks(text, i + 1, section, page_tables[i])
            blocks.extend(page_blocks)
        return ParsedDocument("pdf", blocks, pages=n, warnings=warnings)
    finally:
        if plumber:
            plumber.close()
        pdf.close()


_TABLE_MARK = "\x00table "  # stands for the n-th table of a page in its text, where the table was


def _draws_lines(page) -> bool:
    import pypdfium2.raw as pdfium_c

    return next(iter(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=3)), None) is not None


def _open_plumber(path: Path, warnings: list[str]):
    import pdfplumber

    try:
        return pdfplumber.open(str(path))
    except Exception as exc:  # pdfminer raises its own errors on PDFs pdfium accepts
        warnings.append(f"tables were read as plain text: pdfplumber could not open the PDF ({type(exc).__name__})")
        return False


def _plumber_tables(plumber, index: int, page, textpage,
                    warnings: list[str]) -> list[tuple[tuple[float, float, float, float], Block]]:
    """(bbox, table block) of the ruled tables on one page that hold rows of at least two filled cells.

    pdfplumber finds the grid; each cell's text is read by pypdfium2, which decodes accented glyphs
    that pdfminer drops ("Fundación" came out as "Fundaci n") and keeps word spaces it merges.
    """
    plumber_page = plumber.pages[index]
    try:
        if plumber_page.rotation % 360:
            return []  # bbox arithmetic below assumes an upright page
        x0, top = plumber_page.bbox[0], plumber_page.bbox[1]
        out = []
        for table in plumber_page.find_tables():
            rows = [[None if cell is None else " ".join(_box_text(page, textpage, _shift(cell, x0, top)).split())
                     for cell in row.cells] for row in table.rows]
            block = table_block(rows, page=index + 1)
            if block is not None:
                out.append((_shift(table.bbox, x0, top), block))
        return out
    except Exception as exc:
        warnings.append(f"tables on page {index + 1} were read as plain text ({type(exc).__name__})")
        return []
    finally:
        plumber_page.close()


def _shift(box, x0: float, top: float) -> tuple[float, float, float, float]:
    return box[0] - x0, box[1] - top, box[2] - x0, box[3] - top


def _box_text(page, textpage, box: tuple[float, float, float, float]) -> str:
    """pypdfium2's text inside a box given top-down from the page's top-left corner."""
    left, bottom, right, top = page.get_mediabox()
    x0, y0, x1, y1 = box
    if x1 - x0 < 1 or y1 - y0 < 1:
        return ""
    return textpage.get_text_bounded(left=left + x0, bottom=top - y1, right=left + x1, top=top - y0).strip()


def _text_around(page, textpage, boxes: list[tuple[float, float, float, float]]) -> str:
    """The page's text outside `boxes` (top-down page coordinates), with a table mark where each box was."""
    left, bottom, right, top = page.get_mediabox()
    width = right - left

    def text(x0: float, y0: float, x1: float, y1: float) -> str:
        return _box_text(page, textpage, (x0, y0, x1, y1))

    order = sorted(range(len(boxes)), key=lambda k: boxes[k][1])
    parts, y = [], 0.0
    for k in order:
        x0, y0, x1, y1 = boxes[k]
        parts.append(text(0, y, width, y0))
        beside = not any(j != k and boxes[j][1] < y1 and boxes[j][3] > y0 for j in range(len(boxes)))
        if beside:  # text left or right of a narrow table, unless another table shares its rows
            parts.append(text(0, y0, x0, y1))
        parts.append(f"{_TABLE_MARK}{k}")
        if beside:
            parts.append(text(x1, y0, width, y1))
        y = max(y, y1)
    parts.append(text(0, y, width, top - bottom))
    return "\n".join(p for p in parts if p)


def table_block(rows: list[list[str | None]], page: int | None = None, section: str | None = None,
                header: bool | None = None) -> Block | None:
    """A table as one block, a line per row that names its columns ("Header: cell; Header: cell"), so
    any row read alone (one chunk of a long table) still says what its cells are. A first row with a
    single filled cell is the caption: the first line, and the block's section when short. None when fewer than two rows
    have two filled cells: a ruled box around a paragraph is not a table. ``None`` cells are spans of
    the cell to their left (pdfplumber, merged DOCX cells). ``header``: whether the first row names
    the columns (HTML ``<th>``); None judges it from the row (short, distinct words, no figures). A
    table with no header row keeps its rows as "cell | cell" lines.
    """
    rows = [r for r in rows if any(c for c in r)]
    caption = None
    if len(rows) > 1 and sum(1 for c in rows[0] if c) == 1:
        caption = next(c for c in rows[0] if c)
        rows = rows[1:]
    if sum(1 for r in rows if sum(1 for c in r if c) >= 2) < 2:
        return None
    if _is_form(rows):
        lines = [_row_text(r) for r in rows]
    elif header if header is not None else _looks_like_header(rows[0]):
        lines = _header_rows(rows)
    else:
        lines = [" | ".join(c for c in r if c) for r in rows]
    text = "\n".join([caption] * bool(caption) + [ln for ln in lines if ln])
    if caption and len(caption.split()) <= 12:  # a long single cell is a row carried over, not a title
        section = caption
    return Block(text, page, section, "table")


def _is_form(rows: list[list[str | None]]) -> bool:
    """Label cells end with a colon ("Registration:", "N5921D") in most rows, or the table has two columns."""
    width = max(sum(1 for c in r if c is not None) for r in rows)
    labelled = sum(1 for r in rows if any(c and c.endswith(":") for c in r))
    return width <= 2 or labelled * 2 >= len(rows)


def _looks_like_header(row: list[str | None]) -> bool:
    cells = [c for c in row if c]  # empty cells: spacer columns of HTML layouts
    return (len(cells) >= 2 and len(set(cells)) == len(cells)
            and all(len(c.split()) <= 8 and sum(ch.isdigit() for ch in c) * 3 < len(c) for c in cells))


def _row_text(row: list[str | None]) -> str:
    """'Label: value; Label: value' for a form row; a cell that is no label stands as it is."""
    cells = [c for c in row if c is not None]
    if len(cells) % 2 == 0 and any(c.endswith(":") for c in cells[::2]) or len(cells) == 2:
        # label, value, label, value: a label printed without its colon ("Visibility") still pairs
        return "; ".join(f"{label.rstrip(':').rstrip()}: {value}" if label else value
                         for label, value in zip(cells[::2], cells[1::2]) if value)
    parts, i = [], 0
    while i < len(cells):
        cell = cells[i]
        nxt = cells[i + 1] if i + 1 < len(cells) else None
        if cell.endswith(":") and nxt is not None and not nxt.endswith(":"):
            if nxt:
                parts.append(f"{cell.rstrip(':').rstrip()}: {nxt}")
            i += 2
            continue
        if cell and not cell.endswith(":"):
            parts.append(cell)
        i += 1
    return "; ".join(parts)


def _header_rows(rows: list[list[str | None]]) -> list[str]:
    """'Header: cell; ...' for each row after the first. A cell spanning several grid columns (the
    ``None`` cells after it) takes the header printed anywhere over its span: pdfplumber's grid often
    puts a header one column off the cells under it."""
    width = max(len(r) for r in rows)
    top = [(rows[0][i] if i < len(rows[0]) else None) or "" for i in range(width)]
    filled: list[str] = []
    for i in range(width):  # a header cell spanning columns names them all
        filled.append(top[i] or (filled[-1] if rows[0][i:i + 1] == [None] and filled else ""))
    lines = []
    for row in rows[1:]:
        pairs, seen = [], set()
        starts = [i for i, c in enumerate(row) if c is not None] + [len(row)]
        for i, j in zip(starts, starts[1:]):
            if not row[i]:
                continue
            named = [h for h in dict.fromkeys(top[i:j]) if h] or [filled[i]] if i < width else []
            h = " / ".join(named) or f"column {i + 1}"
            if (h, row[i]) not in seen:
                seen.add((h, row[i]))
                pairs.append(f"{h}: {row[i]}")
        lines.append("; ".join(pairs))
    return lines


def _is_pdf_heading(line: str, next_line: str | None) -> bool:
    s = line.strip()
    if not s or len(s) > 80 or len(s.split()) > 12 or _BULLET.match(s):
        return False
    if s[-1] in ".,;:!?)" or not (s[0].isupper() or s[0].isdigit()):
        return False
    if next_line is None or not next_line.strip():
        return False
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", s)]
    if not words:
        return False
    small = {"a", "an", "and", "or", "of", "the", "to", "for", "in", "on", "with", "at", "by", "from", "vs", "is"}
    capitalised = sum(1 for w in words if w[0].isupper() or w.lower() in small)
    return capitalised == len(words) or s.isupper()


def _pdf_page_blocks(text: str, page: int, section: str | None,
                     tables: list[Block] | None = None) -> tuple[list[Block], str | None]:
    """Rebuild paragraphs from wrapped PDF lines; short title-case lines become headings; table marks
    become the page's table blocks (their section is their caption, else the heading above them)."""
    text = text.replace("\x02", "-").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    blocks: list[Block] = []
    current: list[str] = []
    current_kind = "paragraph"

    def flush():
        nonlocal current, current_kind
        if current:
            blocks.append(Block(" ".join(x.strip() for x in current).strip(), page, section, current_kind))
        current, current_kind = [], "paragraph"

    for idx, raw in enumerate(lines):
        line = raw.rstrip()
        nxt = lines[idx + 1] if idx + 1 < len(lines) else None
        if not line.strip():
            flush()
            continue
        if line.startswith(_TABLE_MARK):
            flush()
            table = (tables or [])[int(line[len(_TABLE_MARK):])]
            blocks.append(Block(table.text, page, table.section or section, "table"))
            continue
        if _is_pdf_heading(line, nxt):
            flush()
            heading = line.strip()
            section = heading
            blocks.append(Block(heading, page, section, "heading"))
            continue
        if _BULLET.match(line):
            flush()
            current_kind = "list"
        current.append(line)
        # A wrapped line ends with a space in most generators; a line ending a sentence
        # without one closes the paragraph.
        if not raw.endswith(" ") and line.rstrip()[-1:] in ".!?:" and current_kind == "paragraph":
            flush()
    flush()
    return blocks, section


# ------------------------------------------------------------------ DOCX

def parse_docx(path: Path) -> ParsedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors...
        raise BadInputError(f"the DOCX file is damaged and cannot be opened ({type(exc).__name__})") from None
    styles = ParagraphStyles(document)  # one pass: python-docx's paragraph.style scans every style
    check_docx(document)
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    title = document.core_properties.title or None
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = styles.name_of(item._p)
            level = _heading_level(style)
            if level:
                headings = [h for h in headings if h[0] < level] + [(level, text)]
                blocks.append(Block(text, None, _path(headings), "heading"))
            else:
                is_list = "list" in style.lower() or item._p.pPr is not None and item._p.pPr.numPr is not None
                blocks.append(Block(("- " + text) if is_list else text, None, _path(headings),
                                    "list" if is_list else "paragraph"))
        elif isinstance(item, Table):
            rows = [cells for cells in docx_table_rows(item) if any(cells)]
            if rows:
                blocks.append(_table_or_lines(rows, None, _path(headings)))
    return ParsedDocument("docx", _merge_lists(blocks), title=title)


def _heading_level(style: str) -> int:
    s = style.lower()
    if s == "title":
        return 1
    m = re.match(r"heading\s*(\d)", s)
    return int(m.group(1)) if m else 0


def _path(headings: list[tuple[int, str]]) -> str | None:
    return " > ".join(h[1] for h in headings) or None


def _table_or_lines(rows: list[list[str | None]], page: int | None, section: str | None,
                    header: bool | None = None) -> Block:
    """A table block whose rows name their columns; a table of one row or one column stays as lines."""
    return table_block(rows, page, section, header) or Block(
        "\n".join(" | ".join(c for c in r if c) for r in rows if any(r)), page, section, "table")


def _merge_lists(blocks: list[Block]) -> list[Block]:
    """Consecutive list items of one section become one list block, so a list is chunked as a unit."""
    out: list[Block] = []
    for b in blocks:
        if b.kind == "list" and out and out[-1].kind == "list" and out[-1].section == b.section and out[-1].page == b.page:
            out[-1].text += "\n" + b.text
        else:
            out.append(Block(b.text, b.page, b.section, b.kind))
    return out


# ------------------------------------------------------------------ PPTX

def parse_pptx(path: Path, max_pages: int | None = None) -> ParsedDocument:
    from pptx import Presentation

    try:
        deck = Presentation(str(path))
    except Exception as exc:
        raise BadInputError(f"the PPTX file is damaged and cannot be opened ({type(exc).__name__})") from None
    slides = list(deck.slides)
    if max_pages and len(slides) > max_pages:
        raise BadInputError(f"the presentation has {len(slides)} slides, more than the limit of {max_pages}")
    check_pptx(slides)
    blocks: list[Block] = []
    for number, slide in enumerate(slides, start=1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else None
        if title:
            blocks.append(Block(title, number, title, "heading"))
        for shape in slide.shapes:
            if shape is title_shape:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[" ".join(c.text.split()) for c in r.cells] for r in shape.table.rows]
                if rows:
                    blocks.append(_table_or_lines(rows, number, title))
            elif shape.has_text_frame:
                paras = [p.text.strip() for p in shape.text_frame.paragraphs if p.text.strip()]
                if paras:
                    kind = "list" if len(paras) > 1 else "paragraph"
                    text = "\n".join(("- " + p) if kind == "list" else p for p in paras)
                    blocks.append(Block(text, number, title, kind))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                blocks.append(Block(notes, number, title, "paragraph"))
    return ParsedDocument("pptx", blocks, pages=len(slides))


# ------------------------------------------------------------------ HTML

_SKIP_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template", "iframe")


def parse_html_text(html: str) -> ParsedDocument:
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML and inline-XBRL filings
        soup = BeautifulSoup(html, "lxml")
    for tag in soup(_SKIP_TAGS):
        tag.decompose()
    for tag in soup.find_all(style=re.compile(r"display:\s*none", re.I)):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    body = soup.find("main") or soup.find("article") or soup.body or soup
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    block_tags = {"p", "li", "pre", "blockquote", "dd", "dt", "td", "th", "caption", "figcaption"}

    def walk(node):
        nonlocal headings
        for child in node.children:
            name = getattr(child, "name", None)
            if name is None:
                text = str(child).strip()
                if text and node is body:
                    blocks.append(Block(" ".join(text.split()), None, _path(headings)))
                continue
            if re.fullmatch(r"h[1-6]", name):
                text = child.get_text(" ", strip=True)
                if text:
                    level = int(name[1])
                    headings = [h for h in headings if h[0] < level] + [(level, text)]
                    blocks.append(Block(text, None, _path(headings), "heading"))
            elif name == "table":
                trs = [tr for tr in child.find_all("tr") if tr.get_text(strip=True)]
                rows = [[" ".join(c.get_text(" ", strip=True).split()) for c in tr.find_all(["td", "th"])] for tr in trs]
                if rows:
                    first = trs[0].find_all(["td", "th"])
                    header = True if first and all(c.name == "th" for c in first) else None
                    blocks.append(_table_or_lines(rows, None, _path(headings), header))
            elif name in ("ul", "ol"):
                items = [" ".join(li.get_text(" ", strip=True).split()) for li in child.find_all("li")]
                items = [i for i in items if i]
                if items:
                    blocks.append(Block("\n".join("- " + i for i in items), None, _path(headings), "list"))
            elif name in block_tags or not any(getattr(c, "name", None) for c in child.children):
                text = " ".join(child.get_text(" ", strip=True).split())
                if text:
                    blocks.append(Block(text, None, _path(headings)))
            else:
                walk(child)

    walk(body)
    return ParsedDocument("html", blocks, title=title)


def parse_html(path: Path) -> ParsedDocument:
    return parse_html_text(_decode(path.read_bytes()))


# ------------------------------------------------------------------ Markdown / text

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


# A line longer than this is cut at a space into several, and a paragraph is closed once it holds this
# much: no block of a 200 MB one-line file is ever held whole (issue 24). No document of the shared
# corpora or the sample data comes near it, so they parse as before.
MAX_BLOCK_CHARS = 1_000_000
_READ_CHARS = 1 << 18      # a text file is read this many characters at a time
_DETECT_BYTES = 1 << 20    # its encoding is checked a MB at a time


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
    para: list[str] = []
    para_chars = 0
    para_kind = "paragraph"
    in_code = False
    skip_underline = False

    def flush():
        nonlocal para, para_kind, para_chars
        block = Block("\n".join(para).strip(), None, _path(headings), para_kind) if para else None
        para, para_kind, para_chars = [], "paragraph", 0
        return block

    line = next(lines, None)
    while line is not None:
        following = next(lines, None)
        if para_chars + len(line) > MAX_BLOCK_CHARS and (block := flush()):  # a paragraph of a million characters
            yield block
        if line.strip().startswith("```"):
            in_code = not in_code
        if in_code or line.strip().startswith("```"):
            para.append(line)
            para_chars += len(line)
            line = following
            continue
        if skip_underline:
            skip_underline = False
            line = following
            continue
        heading = None
        m = _MD_HEADING.match(line) if kind == "md" else None
        if m:
            heading = (len(m.group(1)), m.group(2).strip())
        elif (kind == "md" and not para and line.strip() and following is not None
              and re.fullmatch(r"\s*(=+|-{3,})\s*", following)):
            heading = (1 if "=" in following else 2, line.strip())  # setext heading
            skip_underline = True
        if heading:
            if block := flush():
                yield block
            level, title = heading
            if title:
                headings = [h for h in headings if h[0] < level] + [(level, title)]
                yield Block(title, None, _path(headings), "heading")
            line = following
            continue
        if not line.strip() or re.fullmatch(r"\s*([-*_=]\s*){3,}", line):  # blank or horizontal rule
            if block := flush():
                yield block
            line = following
            continue
        stripped = line.strip()
        row_kind = "table" if stripped.startswith("|") else "list" if _BULLET.match(stripped) else "paragraph"
        if para and row_kind != para_kind and not (para_kind == "list" and row_kind == "paragraph" and line.startswith(" ")):
            if block := flush():
                yield block
        if not para:
            para_kind = row_kind
        para.append(line.rstrip())
        para_chars += len(line)
        line = following
    if block := flush():
        yield block


def _text_encoding(raw) -> str:
    """The encoding of a text file (a binary stream at its start): a byte-order mark, else UTF-8 when
    every byte decodes as UTF-8 (checked a MB at a time), else charset-normalizer's best guess from
    the first MB and the bytes around the first one that is not UTF-8."""
    head = raw.read(_DETECT_BYTES)
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if head.startswith(bom):
            return enc
    decoder = codecs.getincrementaldecoder("utf-8")()
    piece, offset, bad = head, 0, None
    while bad is None:
        try:
            decoder.decode(piece, final=not piece)
        except UnicodeDecodeError as exc:
            bad = offset + exc.start
        if not piece:
            break
        offset += len(piece)
        piece = raw.read(_DETECT_BYTES)
    if bad is None:
        return "utf-8"
    sample = head
    if bad >= len(head):
        raw.seek(max(len(head), bad - (1 << 15)))
        sample += raw.read(1 << 16)
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise BadInputError("its text encoding could not be recognised")
    return best.encoding


def _stream_text(path: Path, kind: str) -> tuple[ParsedDocument, Iterator[Block]]:
    """A Markdown or text file read a piece at a time: the document (its title set once its first
    heading is read) and its blocks, produced as the file is read."""
    doc = ParsedDocument(kind, [])

    def blocks() -> Iterator[Block]:
        with path.open("rb") as raw:
            for block in _markdown_blocks(_lines_of(_open_text(raw, None)), kind):
                if doc.title is None and block.kind == "heading":
                    doc.title = block.text
                yield block

    return doc, blocks()


def parse_markdown(path: Path) -> ParsedDocument:
    return _collect(*_stream_text(path, "md"))


def parse_txt(path: Path) -> ParsedDocument:
    return _collect(*_stream_text(path, "txt"))


def _collect(doc: ParsedDocument, blocks: Iterator[Block]) -> ParsedDocument:
    doc.blocks = list(blocks)
    return doc


# ------------------------------------------------------------------ CSV / JSONL

def _open_text(raw, newline: str | None, encoding: str | None = None) -> io.TextIOWrapper:
    """A text file's binary stream as text from its start, in `encoding` or the one _text_encoding finds."""
    raw.seek(0)
    if encoding is None:
        encoding = _text_encoding(raw)
        raw.seek(0)
    # errors="replace": a byte the guessed encoding cannot read is one replacement character
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=newline)


def _stream_csv(path: Path) -> tuple[ParsedDocument, Iterator[Block]]:
    """One block per row, written as 'column: value' pairs so each row stands alone in a chunk; the
    rows are read one at a time."""
    doc = ParsedDocument("csv", [])

    def blocks() -> Iterator[Block]:
        with path.open("rb") as raw:
            head = _open_text(raw, "")
            sample = head.read(8192)
            encoding = head.encoding
            head.detach()  # `raw` stays open for the rows
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            rows = (r for r in csv.reader(_open_text(raw, "", encoding), dialect) if any(c.strip() for c in r))
            header = next(rows, None)
            if header is None:
                raise BadInputError("the CSV file has no rows")
            body = False
            for r in rows:
                body = True
                pairs = [f"{h.strip() or f'column {i + 1}'}: {v.strip()}" for i, (h, v) in enumerate(zip(header, r))
                         if v.strip()]
                yield Block("; ".join(pairs), None, None, "table")
            if not body:
                yield Block(", ".join(header), None, None, "table")

    return doc, blocks()


def _stream_jsonl(path: Path) -> tuple[ParsedDocument, Iterator[Block]]:
    """Each record becomes one block of its text fields, read a line at a time; malformed lines are
    skipped and counted (the document's warning, once every line is read)."""
    doc = ParsedDocument("jsonl", [])

    def blocks() -> Iterator[Block]:
        bad, first_bad, found = 0, None, False
        with path.open("rb") as raw:
            for n, line in enumerate(_open_text(raw, None), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad, first_bad = bad + 1, first_bad or n
                    continue
                if isinstance(record, dict):
                    text = "\n".join(f"{k}: {_flat(v)}" for k, v in record.items() if _flat(v).strip())
                else:
                    text = _flat(record)
                if text.strip():
                    found = True
                    yield Block(text, None, None, "paragraph")
        if not found and bad:
            raise BadInputError(f"no line is valid JSON (first bad line: {first_bad})")
        if bad:
            doc.warnings.append(f"skipped {bad} line(s) that are not valid JSON (first: line {first_bad})")

    return doc, blocks()


def parse_csv(path: Path) -> ParsedDocument:
    return _collect(*_stream_csv(path))


def parse_jsonl(path: Path) -> ParsedDocument:
    return _collect(*_stream_jsonl(path))


def _flat(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)) or value is None:
        return "" if value is None else str(value)
    return json.dumps(value, ensure_ascii=False)


# ------------------------------------------------------------------ EML / RTF

def parse_eml(path: Path) -> ParsedDocument:
    import email
    import email.policy  # here, not at the top: 13 ms of every parse worker's start

    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    subject = str(msg.get("subject") or "").strip() or None
    header = "\n".join(f"{h}: {msg[h]}" for h in ("From", "To", "Date", "Subject") if msg.get(h))
    blocks = [Block(header, None, subject, "paragraph")] if header else []
    body = msg.get_body(preferencelist=("plain", "html"))
    parts = [body] if body is not None else [p for p in msg.walk() if p.get_content_maintype() == "text"]
    for part in parts:
        try:
            content = part.get_content()
        except (LookupError, UnicodeDecodeError):
            content = part.get_payload(decode=True).decode("utf-8", errors="replace")
        if part.get_content_subtype() == "html":
            sub = parse_html_text(content).blocks
        else:
            sub = parse_markdown_text(content, "txt").blocks
        blocks += [Block(b.text, None, b.section or subject, b.kind) for b in sub]
    attachments = [p.get_filename() for p in msg.iter_attachments() if p.get_filename()]
    if attachments:
        blocks.append(Block("Attachments: " + ", ".join(attachments), None, subject, "paragraph"))
    return ParsedDocument("eml", blocks, title=subject)


def parse_rtf(path: Path) -> ParsedDocument:
    from striprtf.striprtf import rtf_to_text

    try:
        text = rtf_to_text(_decode(path.read_bytes()), errors="ignore")
    except Exception as exc:
        raise BadInputError(f"the RTF file cannot be read ({type(exc).__name__})") from None
    doc = parse_markdown_text(text, "txt")
    doc.kind = "rtf"
    return doc


# Formats read a piece at a time (a 200 MB file is never held whole); the others are parsed whole.
_STREAMED = {
    "md": lambda path: _stream_text(path, "md"), "txt": lambda path: _stream_text(path, "txt"),
    "csv": _stream_csv, "jsonl": _stream_jsonl,
}
_PARSERS = {
    "pdf": parse_pdf, "docx": parse_docx, "pptx": parse_pptx, "html": parse_html, "md": parse_markdown,
    "txt": parse_txt, "csv": parse_csv, "jsonl": parse_jsonl, "eml": parse_eml, "rtf": parse_rtf,
}
