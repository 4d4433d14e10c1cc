"""Tables keep their column headers and labels on every row, so a row chunked alone still says what it holds."""

from __future__ import annotations

import pytest

from ragtune.errors import BadInputError
from retrieval.chunking import ChunkingConfig, chunk_blocks
from retrieval.formats import parse_file

DRUGS = ["Amoxicillin", "Ibuprofen", "Metformin", "Lisinopril", "Atorvastatin", "Omeprazole", "Sertraline",
         "Levothyroxine", "Amlodipine", "Simvastatin", "Losartan", "Gabapentin"]


def write_table_pdf(path, heading: str, header: list[str], rows: list[list[str]], after: str) -> None:
    """A one-page PDF: a heading, a ruled table (a box per cell) and a paragraph below it."""
    ops = [f"BT /F1 12 Tf 72 750 Td ({heading}) Tj ET"]
    widths, height, top = [150, 120, 180], 18, 730
    for r, row in enumerate([header] + rows):
        y, x = top - (r + 1) * height, 72
        for width, cell in zip(widths, row):
            ops.append(f"{x} {y} {width} {height} re S")
            ops.append(f"BT /F1 10 Tf {x + 4} {y + 5} Td ({cell}) Tj ET")
            x += width
    ops.append(f"BT /F1 11 Tf 72 {top - (len(rows) + 3) * height} Td ({after}) Tj ET")
    content = "\n".join(ops).encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
               b"/Contents 5 0 R >>",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(out)


@pytest.fixture(scope="module")
def dosing_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "dosing.pdf"
    rows = [[drug, f"{(i + 1) * 25} mg", f"{i % 3 + 1} times a day with water"] for i, drug in enumerate(DRUGS)]
    write_table_pdf(path, "Dosing Schedule", ["Drug", "Dose", "Frequency"], rows, "Doses are taken with food.")
    return path


def test_pdf_table_rows_name_their_columns(dosing_pdf):
    doc = parse_file(dosing_pdf, pdf_tables=True)
    tables = [b for b in doc.blocks if b.kind == "table"]
    assert len(tables) == 1 and tables[0].section == "Dosing Schedule"
    lines = tables[0].text.split("\n")
    assert lines[0] == "Drug: Amoxicillin; Dose: 25 mg; Frequency: 1 times a day with water"
    assert len(lines) == len(DRUGS) and all(ln.startswith("Drug: ") and "; Dose: " in ln for ln in lines)
    # the cells are read once (from the table, not again from the text layer); the text around stays
    assert doc.text.count("Amoxicillin") == 1
    assert any(b.kind == "paragraph" and b.text == "Doses are taken with food." for b in doc.blocks)


def test_pdf_table_split_across_chunks_keeps_headers_on_every_row(dosing_pdf, counter):
    chunks = chunk_blocks(parse_file(dosing_pdf, pdf_tables=True).blocks, counter, ChunkingConfig(60, 0))
    table_chunks = [c for c in chunks if "Drug: " in c.text]
    assert len(table_chunks) >= 3  # the table really was split
    for chunk in table_chunks:
        assert chunk.section == "Dosing Schedule"
        assert chunk.text.startswith("Dosing Schedule\n")  # the caption opens every chunk of the table
        assert chunk.tokens <= 60
        for line in chunk.text.split("\n"):
            if any(drug in line for drug in DRUGS):  # besides rows: the heading, the paragraph after
                assert line.strip().startswith("Drug: ") and "; Dose: " in line and "; Frequency: " in line, line
    assert all(any(f"Drug: {drug};" in c.text for c in table_chunks) for drug in DRUGS)


def test_table_chunks_repeat_only_their_caption(dosing_pdf, counter):
    """Dropping each chunk's repeated prefix (the caption atop a continued table) gives back the text."""
    blocks = parse_file(dosing_pdf, pdf_tables=True).blocks
    chunks = chunk_blocks(blocks, counter, ChunkingConfig(60, 10))
    assert any(c.overlap_chars for c in chunks)
    joined = "".join(c.text[c.overlap_chars:] for c in chunks)
    assert "".join(joined.split()) == "".join("".join(b.text for b in blocks).split())


def test_pdf_tables_can_be_switched_off(dosing_pdf):
    doc = parse_file(dosing_pdf, pdf_tables=False)
    assert not any(b.kind == "table" for b in doc.blocks)
    assert "Amoxicillin" in doc.text and "Drug: " not in doc.text


def test_form_table_keeps_labels_with_values_and_its_caption(shared_corpora, counter):
    """An NTSB report: 'Aircraft and Owner/Operator Information' is a ruled form of label/value cells."""
    doc = parse_file(shared_corpora / "ntsb-reports" / "docs" / "20071229X02007.pdf", pdf_tables=True)
    form = next(b for b in doc.blocks if b.kind == "table" and "Registration: N5921D" in b.text)
    assert form.section == "Aircraft and Owner/Operator Information" and form.page == 2
    assert "Aircraft Make: Piper; Registration: N5921D" in form.text.split("\n")
    weather = next(b for b in doc.blocks if b.kind == "table" and b.section == "Meteorological Information and Flight Plan")
    assert "Visibility: 10 Miles" in weather.text  # a label printed without its colon still pairs with its value
    for chunk in chunk_blocks(doc.blocks, counter, ChunkingConfig(40, 0)):
        if "N5921D" in chunk.text and chunk.page == 2:
            assert "Registration: N5921D" in chunk.text


def test_docx_table_split_across_chunks_keeps_headers(sample_docs, counter):
    doc = parse_file(sample_docs / "travel_policy.docx")
    table = next(b for b in doc.blocks if b.kind == "table")
    rows = table.text.split("\n")
    assert rows and all(r.startswith("City: ") and "; Daily per-diem rate: " in r for r in rows)
    chunks = chunk_blocks([table], counter, ChunkingConfig(24, 0))
    assert len(chunks) > 1 and all(c.text.startswith("City: ") for c in chunks)


@pytest.mark.parametrize("name, reason", [("encrypted_with_password.pdf", "password"), ("corrupt.pdf", "damaged")])
def test_bad_pdf_still_fails_with_its_reason_when_tables_are_read(name, reason):
    from ragtune.paths import repo_datasets_dir

    with pytest.raises(BadInputError, match=reason):
        parse_file(repo_datasets_dir() / "bad_files" / name, pdf_tables=True)
