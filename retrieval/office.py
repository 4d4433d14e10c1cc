"""Word and PowerPoint files read in one pass, under caps no real document comes near.

python-docx does some work per paragraph or per cell that grows with the whole file, so a small file
can cost minutes: ``paragraph.style`` scans every style (a 137 KB DOCX of 1,000 paragraphs and 20,000
styles took 385 s), ``row.cells`` lists a spanned cell once per column it spans (a 36 KB DOCX whose cell
spans 20 million columns took 2.3 s and 345 MB) and finds each vertically merged cell by walking up the
table (200 rows of 10 merged cells took 21 s). Here styles are read once into a dictionary, table rows
are read top-down once, and what is left is capped: styles, paragraphs, columns a cell spans, cells.

The caps are far above real files: the DOCX files in the shared corpora and datasets/ define 164 styles
at most and hold 8,243 paragraphs at most (872 pages); the zip gate (``ragtune.ingest_gate``) has already
capped the decompressed size.
"""

from __future__ import annotations

from itertools import islice

from ragtune.errors import BadInputError

MAX_STYLES = 10_000
MAX_PARAGRAPHS = 200_000  # DOCX body (tables included); PPTX slides and notes
MAX_SPAN = 63  # Word's own limit on the columns of a table
MAX_CELLS = 200_000  # table cells of a DOCX, counting each column a cell spans


def _w(tag: str) -> str:
    from docx.oxml.ns import qn

    return qn(f"w:{tag}")


class ParagraphStyles:
    """Paragraph style names by style id, read in one pass over the styles part, as python-docx's
    ``paragraph.style.name`` resolves them: an id names its first definition, and a missing id, or the id
    of a style of another type (or of none), means the document's default paragraph style (its last one)."""

    def __init__(self, document):
        self.names: dict[str, str] = {}
        self.default = ""
        types: dict[str, str | None] = {}
        for count, style in enumerate(document.styles.element.iterchildren(_w("style")), start=1):
            if count > MAX_STYLES:
                raise BadInputError(f"the DOCX file defines more than {MAX_STYLES} styles (real documents define "
                                    "a few hundred); save it again from a clean template")
            kind = style.get(_w("type"))  # python-docx reads a style without a type as no paragraph style
            name = style.find(_w("name"))
            name = (name.get(_w("val")) if name is not None else None) or ""
            style_id = style.get(_w("styleId"))
            if style_id is not None and style_id not in types:
                types[style_id] = kind
                if kind == "paragraph":
                    self.names[style_id] = name
            if kind == "paragraph" and style.get(_w("default")) in ("1", "true", "on"):
                self.default = name

    def name_of(self, p) -> str:
        """The style name of a ``w:p`` element ('' for a style without a name)."""
        style_id = p.style
        if style_id is None:
            return self._ui(self.default)
        return self._ui(self.names.get(style_id, self.default))

    @staticmethod
    def _ui(name: str) -> str:
        from docx.styles import BabelFish

        return BabelFish.internal2ui(name) if name else ""


def check_docx(document) -> None:
    """Refuse a document body with more paragraphs or table cells than the caps, before it is read."""
    body = document.element.body
    paragraphs = sum(1 for _ in islice(body.iter(_w("p")), MAX_PARAGRAPHS + 1))
    if paragraphs > MAX_PARAGRAPHS:
        raise BadInputError(f"the DOCX file holds more than {MAX_PARAGRAPHS} paragraphs; split it")
    cells = 0
    for tc in body.iter(_w("tc")):
        span = tc.grid_span
        if span > MAX_SPAN:
            raise BadInputError(f"a table cell spans {span} columns; Word tables have at most {MAX_SPAN}")
        cells += span
        if cells > MAX_CELLS:
            raise BadInputError(f"the DOCX file's tables hold more than {MAX_CELLS} cells; split it")


def docx_table_rows(table) -> list[list[str | None]]:
    """The rows of a table as python-docx's ``row.cells`` gives them, read top-down in one pass: a cell
    spanning several columns fills the first (None after it), and a cell that continues a vertical merge
    repeats the text of the cell above it, as a table of pdfplumber does."""
    from docx.table import _Cell

    rows = []
    above: dict[int, tuple[object, str]] = {}  # grid column -> (cell, text) where the row above holds one
    for tr in table._tbl.tr_lst:
        cells: list[str | None] = []
        seen: set[int] = set()
        here: dict[int, tuple[object, str]] = {}
        column = tr.grid_before
        for tc in tr.tc_lst:
            if tc.vMerge == "continue" and column in above:
                root, text = above[column]
            else:
                root, text = tc, " ".join(_Cell(tc, table).text.split())
            for _ in range(root.grid_span):
                cells.append(None if id(root) in seen else text)
                seen.add(id(root))
            here[column] = (root, text)
            column += tc.grid_span
        above = here
        rows.append(cells)
    return rows


def check_pptx(slides) -> None:
    """Refuse a presentation whose slides and notes hold more paragraphs than the cap, before it is read."""
    from pptx.oxml.ns import qn

    count = 0
    for slide in slides:
        parts = [slide._element] + ([slide.notes_slide._element] if slide.has_notes_slide else [])
        for part in parts:
            count += sum(1 for _ in islice(part.iter(qn("a:p")), MAX_PARAGRAPHS + 1 - count))
            if count > MAX_PARAGRAPHS:
                raise BadInputError(f"the presentation holds more than {MAX_PARAGRAPHS} paragraphs; split it")
