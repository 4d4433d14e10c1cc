"""Word (DOCX): paragraphs by style (headings give the sections), lists and tables, under the caps of
:mod:`retrieval.office`."""

from __future__ import annotations

import re
from pathlib import Path

from ragtune.errors import BadInputError

from ..office import ParagraphStyles, check_docx, docx_table_rows
from .document import Block, ParsedDocument, heading_path
from .tables import table_or_lines


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
                blocks.append(Block(text, None, heading_path(headings), "heading"))
            else:
                is_list = "list" in style.lower() or item._p.pPr is not None and item._p.pPr.numPr is not None
                blocks.append(Block(("- " + text) if is_list else text, None, heading_path(headings),
                                    "list" if is_list else "paragraph"))
        elif isinstance(item, Table):
            rows = [cells for cells in docx_table_rows(item) if any(cells)]
            if rows:
                blocks.append(table_or_lines(rows, None, heading_path(headings)))
    return ParsedDocument("docx", _merge_lists(blocks), title=title)


def _heading_level(style: str) -> int:
    s = style.lower()
    if s == "title":
        return 1
    m = re.match(r"heading\s*(\d)", s)
    return int(m.group(1)) if m else 0


def _merge_lists(blocks: list[Block]) -> list[Block]:
    """Consecutive list items of one section become one list block, so a list is chunked as a unit."""
    out: list[Block] = []
    for b in blocks:
        if b.kind == "list" and out and out[-1].kind == "list" and out[-1].section == b.section and out[-1].page == b.page:
            out[-1].text += "\n" + b.text
        else:
            out.append(Block(b.text, b.page, b.section, b.kind))
    return out
