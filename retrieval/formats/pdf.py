"""PDF: the text layer from pypdfium2, ruled tables from pdfplumber, running headers and footers dropped."""

from __future__ import annotations

import re
from pathlib import Path

from ragtune.errors import BadInputError
from ragtune.pdfium_lock import PDFIUM_LOCK

from .document import BULLET, Block, ParsedDocument
from .tables import table_block

_TABLE_MARK = "\x00table "  # stands for the n-th table of a page in its text, where the table was


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
    pdf = _open_pdf(path)
    warnings: list[str] = []
    try:
        n = len(pdf)
        if max_pages and n > max_pages:
            raise BadInputError(f"the PDF has {n} pages, more than the limit of {max_pages}")
        texts, page_tables = _read_pages(pdf, path, tables, warnings)
    finally:
        pdf.close()
    if strip_repeats:
        texts, _ = strip_repeated_lines(texts)
    blocks: list[Block] = []
    section: str | None = None
    for i, text in enumerate(texts):
        page_blocks, section = _pdf_page_blocks(text, i + 1, section, page_tables[i])
        blocks.extend(page_blocks)
    return ParsedDocument("pdf", blocks, pages=n, warnings=warnings)


def _open_pdf(path: Path):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path))  # opens owner-password-only PDFs (no user password)
    except pdfium.PdfiumError as exc:
        msg = str(exc).lower()
        if "password" in msg:
            raise BadInputError("the PDF is encrypted with a password; remove the password and upload it again") from None
        raise BadInputError(f"the PDF is damaged and cannot be opened ({exc})") from None


def _read_pages(pdf, path: Path, tables: bool, warnings: list[str]) -> tuple[list[str], list[list[Block]]]:
    """Each page's text (a table mark where each table was) and its table blocks."""
    texts: list[str] = []
    page_tables: list[list[Block]] = []
    plumber = None  # opened at the first page that draws lines; False: it could not open the file
    try:
        for i in range(len(pdf)):
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
    finally:
        if plumber:
            plumber.close()
    return texts, page_tables


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


def _is_pdf_heading(line: str, next_line: str | None) -> bool:
    s = line.strip()
    if not s or len(s) > 80 or len(s.split()) > 12 or BULLET.match(s):
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
        if BULLET.match(line):
            flush()
            current_kind = "list"
        current.append(line)
        # A wrapped line ends with a space in most generators; a line ending a sentence
        # without one closes the paragraph.
        if not raw.endswith(" ") and line.rstrip()[-1:] in ".!?:" and current_kind == "paragraph":
            flush()
    flush()
    return blocks, section
