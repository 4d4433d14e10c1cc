"""DOCX and PPTX files that make python-docx or python-pptx work far beyond their size are read in one pass
or refused: many styles (a 137 KB DOCX of 1,000 paragraphs and 20,000 styles took 385 s), a cell spanning
millions of columns, long vertical merges, countless paragraphs. What python-docx gives for real files
(style names, merged cells) is kept, checked against python-docx itself."""

from __future__ import annotations

import copy

import docx
import pytest
from docx.oxml.ns import qn
from docx.oxml.styles import CT_Styles
from docx.oxml.table import CT_Tc
from docx.oxml import OxmlElement, parse_xml

from ragtune.errors import BadInputError
from retrieval.formats import parse_file
from retrieval.office import MAX_PARAGRAPHS, MAX_SPAN, MAX_STYLES, ParagraphStyles, docx_table_rows

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def add_styles(document, count: int, kind: str = "paragraph") -> None:
    """`count` styles appended to the styles part as XML (python-docx's add_style scans them all each time)."""
    styles = document.styles.element
    for i in range(count):
        styles.append(parse_xml(f'<w:style {W} w:type="{kind}" w:styleId="Custom{i}"><w:name w:val="Custom {i}"/>'
                                '</w:style>'))


def styled_document(path, styles: int, paragraphs: int):
    """A heading every tenth paragraph (Heading 1 or 2), the others in one of the custom styles."""
    document = docx.Document()
    add_styles(document, styles)
    for i in range(paragraphs):
        if i % 10 == 0:
            document.add_paragraph(f"Part {i // 10}")._p.style = "Heading1" if i % 20 == 0 else "Heading2"
        else:
            document.add_paragraph(f"Paragraph {i} says something.")._p.style = f"Custom{i % styles}"
    document.save(path)
    return path


class Calls:
    """Counts calls to a python-docx method while still running it."""

    def __init__(self, monkeypatch, owner, name: str):
        self.count, real = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def test_styles_are_resolved_once_and_headings_still_found(tmp_path, monkeypatch):
    path = styled_document(tmp_path / "styled.docx", styles=5000, paragraphs=1000)
    lookups = [Calls(monkeypatch, CT_Styles, "get_by_id"), Calls(monkeypatch, CT_Styles, "default_for")]
    doc = parse_file(path)
    assert [c.count for c in lookups] == [0, 0]  # was one scan of the 5,000 styles per paragraph
    headings = [b for b in doc.blocks if b.kind == "heading"]
    assert len(headings) == 100 and headings[0].text == "Part 0" and headings[1].section == "Part 0 > Part 1"
    body = next(b for b in doc.blocks if b.text == "Paragraph 11 says something.")
    assert body.kind == "paragraph" and body.section == "Part 0 > Part 1"


def test_style_names_are_the_ones_python_docx_gives(tmp_path):
    document = docx.Document()
    add_styles(document, 30)
    add_styles(document, 3, kind="character")  # ids Custom0-2 again: the first, a paragraph style, wins
    document.styles.element.append(parse_xml(f'<w:style {W} w:styleId="Nameless"/>'))  # no type: a paragraph
    for style in ["Heading1", "Title", "ListBullet", "Custom7", "Custom0", "Nameless", "NoSuchStyle", None]:
        paragraph = document.add_paragraph("text")
        if style:
            paragraph._p.style = style
    character = document.add_paragraph("text")
    character._p.style = "DefaultParagraphFont"  # a character style named on a paragraph: the default instead
    styles = ParagraphStyles(document)
    for paragraph in document.paragraphs:
        assert styles.name_of(paragraph._p) == (paragraph.style.name or ""), paragraph._p.style


def test_a_docx_with_too_many_styles_is_refused(tmp_path):
    path = styled_document(tmp_path / "styles.docx", styles=MAX_STYLES + 1, paragraphs=20)
    with pytest.raises(BadInputError, match=rf"defines more than {MAX_STYLES} styles"):
        parse_file(path)


def test_a_table_cell_spanning_millions_of_columns_is_refused(tmp_path):
    """python-docx lists a spanned cell once per column it spans: 20 million spans took 2.3 s and 345 MB."""
    document = docx.Document()
    table = document.add_table(rows=2, cols=2)
    table.cell(1, 1).text = "b"
    span = OxmlElement("w:gridSpan")
    span.set(qn("w:val"), "20000000")
    table.rows[0]._tr.tc_lst[0].get_or_add_tcPr().append(span)
    document.save(tmp_path / "span.docx")
    with pytest.raises(BadInputError, match=rf"a table cell spans 20000000 columns; Word tables have at most {MAX_SPAN}"):
        parse_file(tmp_path / "span.docx")


def vertically_merged(rows: int, cols: int):
    document = docx.Document()
    table = document.add_table(rows=rows, cols=cols)
    for r, row in enumerate(table.rows):
        for tc in row._tr.tc_lst:
            merge = OxmlElement("w:vMerge")
            if r == 0:
                merge.set(qn("w:val"), "restart")
            tc.get_or_add_tcPr().append(merge)
    table.cell(0, 0).text = "root"
    return document


def test_long_vertical_merges_are_read_in_one_pass(tmp_path, monkeypatch):
    """python-docx finds each continued cell by walking up the table: 200 rows of 10 took 21 s."""
    vertically_merged(200, 10).save(tmp_path / "merged.docx")
    walks = Calls(monkeypatch, CT_Tc, "_tc_above")
    doc = parse_file(tmp_path / "merged.docx")
    assert walks.count == 0
    assert [b.text for b in doc.blocks] == ["\n".join(["root"] * 200)]


def python_docx_rows(table) -> list[list[str | None]]:
    """Rows as python-docx's row.cells gives them: a cell repeated within a row is a span (None)."""
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            cells.append(None if id(cell._tc) in seen else " ".join(cell.text.split()))
            seen.add(id(cell._tc))
        rows.append(cells)
    return rows


def test_merged_cells_read_as_python_docx_reads_them():
    document = docx.Document()
    table = document.add_table(rows=6, cols=4)
    for r in range(6):
        for c in range(4):
            table.cell(r, c).text = f"r{r} c{c}"
    table.cell(0, 0).merge(table.cell(2, 1))  # a block of 3 rows and 2 columns
    table.cell(3, 2).merge(table.cell(3, 3))  # a horizontal span
    table.cell(4, 3).merge(table.cell(5, 3))  # a vertical one
    for t in (table, vertically_merged(5, 3).tables[0]):
        assert docx_table_rows(t) == python_docx_rows(t)


def test_countless_paragraphs_are_refused_before_they_are_read(tmp_path):
    document = docx.Document()
    body = document.element.body
    paragraph = document.add_paragraph("x")._p
    for _ in range(MAX_PARAGRAPHS):
        body.append(copy.deepcopy(paragraph))
    document.save(tmp_path / "long.docx")
    with pytest.raises(BadInputError, match=rf"holds more than {MAX_PARAGRAPHS} paragraphs"):
        parse_file(tmp_path / "long.docx")

    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    frame = deck.slides.add_slide(deck.slide_layouts[6]).shapes.add_textbox(0, 0, Inches(4), Inches(1)).text_frame
    frame.text = "x"
    body = frame._txBody
    first = body.p_lst[0]
    for _ in range(MAX_PARAGRAPHS):
        body.append(copy.deepcopy(first))
    deck.save(tmp_path / "long.pptx")
    with pytest.raises(BadInputError, match=rf"holds more than {MAX_PARAGRAPHS} paragraphs"):
        parse_file(tmp_path / "long.pptx")
