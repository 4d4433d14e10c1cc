"""Every parser on real files: type by content, text, pages and headings kept; bad files refused with a reason."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ragtune.errors import BadInputError
from retrieval.formats import parse_file

SAMPLE_EXPECT = {
    # file: (kind, a fact that must be in the text)
    "employee_handbook.md": ("md", "27 vacation days"),
    "faq.md": ("md", "FAQ"),
    "parts_catalog.csv": ("csv", "LR-K7-2031"),
    "product_manual_k7.pdf": ("pdf", "E-214"),
    "release_notes.md": ("md", "5.0.0"),
    "security_policy.html": ("html", "14 characters"),
    "travel_policy.docx": ("docx", "Rotterdam"),
    "warranty_and_support.txt": ("txt", "24 months"),
}


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECT))
def test_sample_documents_parse(sample_docs, name):
    kind, fact = SAMPLE_EXPECT[name]
    doc = parse_file(sample_docs / name)
    assert doc.kind == kind
    assert fact in _flat(doc.text)
    assert all(b.text.strip() for b in doc.blocks)


def test_pdf_keeps_pages(sample_docs):
    doc = parse_file(sample_docs / "product_manual_k7.pdf")
    assert doc.pages == 5
    assert {b.page for b in doc.blocks} == {1, 2, 3, 4, 5}
    page3 = _flat(" ".join(b.text for b in doc.blocks if b.page == 3))
    assert "E-214" in page3  # error codes are on page 3 (see datasets/README.md)


def test_markdown_headings_become_sections(sample_docs):
    doc = parse_file(sample_docs / "employee_handbook.md")
    vacation = next(b for b in doc.blocks if "27 vacation days" in b.text)
    assert vacation.section and "Vacation" in vacation.section
    assert doc.title == "Lumora Robotics Employee Handbook"


def test_html_drops_scripts_and_keeps_tables(sample_docs):
    doc = parse_file(sample_docs / "security_policy.html")
    text = doc.text
    assert "<script" not in text and "function(" not in text
    assert any(b.kind == "table" for b in doc.blocks)


def test_docx_headings_lists_and_tables(sample_docs):
    doc = parse_file(sample_docs / "travel_policy.docx")
    kinds = {b.kind for b in doc.blocks}
    assert {"heading", "table"} <= kinds
    table = next(b for b in doc.blocks if b.kind == "table")
    # every row names its columns, so a row cut away from the header row still reads alone
    assert "City: Rotterdam; Country: Netherlands; Daily per-diem rate:" in table.text


def test_every_detected_type_has_one_reader():
    """The readers are keyed by the type detect_kind names (the MIME table's keys): a type without a
    reader would fail on a user's file as a KeyError, a reader no type reaches would be dead code."""
    from retrieval.formats import MIME, READERS

    assert sorted(READERS) == sorted(MIME)


FIXTURES = {
    "docx-tables.docx": "docx", "example-10k-1p.html": "html", "example-10k.html": "html",
    "example-list-items-multiple.docx": "docx", "fake-doc.rtf": "rtf", "fake-html.html": "html",
    "fake-memo.pdf": "pdf", "fake-power-point.pptx": "pptx", "fake-text.txt": "txt", "family-day.eml": "eml",
    "handbook-1p.docx": "docx", "handbook-872p.docx": "docx",
}


@pytest.fixture(scope="module")
def fixtures_parsed(shared_corpora):
    folder = shared_corpora / "format-fixtures" / "docs"
    return {name: parse_file(folder / name) for name in FIXTURES}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_format_fixtures_parse(fixtures_parsed, name):
    doc = fixtures_parsed[name]
    assert doc.kind == FIXTURES[name]
    assert len(_flat(doc.text)) > 50


def test_format_fixture_details(fixtures_parsed):
    eml = fixtures_parsed["family-day.eml"]
    assert eml.title and "Subject:" in eml.text
    pptx = fixtures_parsed["fake-power-point.pptx"]
    assert pptx.pages >= 1 and all(b.page for b in pptx.blocks)
    tables = fixtures_parsed["docx-tables.docx"]
    assert sum(b.kind == "table" for b in tables.blocks) >= 2
    big = fixtures_parsed["handbook-872p.docx"]
    assert len(big.text) > 700_000 and any(b.kind == "heading" for b in big.blocks)


def test_jsonl_skips_bad_lines_and_says_so(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"q": "first", "a": "one"}\nnot json\n{"q": "second", "a": "two"}\n')
    doc = parse_file(path)
    assert doc.kind == "jsonl" and len(doc.blocks) == 2
    assert doc.warnings and "line 2" in doc.warnings[0]


# ------------------------------------------------------------------ bad files

@pytest.mark.parametrize("name, reason", [
    ("corrupt.pdf", "damaged"),
    ("empty.txt", "empty"),
    ("encrypted_with_password.pdf", "password"),
    ("not_really.pdf", "not a PDF"),
])
def test_bad_files_fail_with_a_reason(name, reason):
    from ragtune.paths import repo_datasets_dir

    with pytest.raises(BadInputError, match=reason):
        parse_file(repo_datasets_dir() / "bad_files" / name)


def test_pdf_with_only_an_owner_password_opens():
    from ragtune.paths import repo_datasets_dir

    doc = parse_file(repo_datasets_dir() / "bad_files" / "encrypted_no_user_password.pdf")
    assert doc.kind == "pdf" and doc.text.strip()


def test_type_comes_from_content_not_extension(tmp_path, sample_docs):
    html_as_txt = tmp_path / "page.txt"
    html_as_txt.write_text("<html><body><h1>Title</h1><p>Body text here.</p><script>x()</script></body></html>")
    doc = parse_file(html_as_txt)
    assert doc.kind == "html" and "x()" not in doc.text
    pdf_as_bin = tmp_path / "manual.bin"
    pdf_as_bin.write_bytes((sample_docs / "product_manual_k7.pdf").read_bytes())
    assert parse_file(pdf_as_bin).kind == "pdf"


def test_binary_and_odd_files_are_refused(tmp_path):
    png = tmp_path / "diagram.md"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(BadInputError, match="image/png"):
        parse_file(png)
    archive = tmp_path / "report.docx"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(BadInputError, match="zip archive"):
        parse_file(archive)
    truncated = tmp_path / "cut.docx"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(BadInputError, match="damaged"):
        parse_file(truncated)
    blank = tmp_path / "blank.md"
    blank.write_text("   \n\n  \n")
    with pytest.raises(BadInputError, match="no text"):
        parse_file(blank)


def test_page_limit(sample_docs):
    with pytest.raises(BadInputError, match="more than the limit of 3"):
        parse_file(sample_docs / "product_manual_k7.pdf", max_pages=3)


PARSE_PDFS_FROM_THREADS = """
import sys, threading
from pathlib import Path
from ragtune.errors import BadInputError
from ragtune.ingest_gate import check_file
from retrieval.formats import parse_file

pdfs = sorted(Path(sys.argv[1]).rglob("*.pdf"))

def outcome(path):
    try:
        check_file(path.name, path.read_bytes())
        return parse_file(path).text
    except BadInputError as exc:
        return "refused: " + str(exc)

alone = [outcome(p) for p in pdfs]
seen = []

def run():
    for _ in range(8):
        seen.append([outcome(p) for p in pdfs])

threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(seen) == 32 and all(texts == alone for texts in seen), "threads read other text than one thread"
print(len(pdfs), "pdfs")
"""


def test_pdfs_parse_from_several_threads_at_once():
    """PDFium is not thread-safe: unserialised, this crashed the process (segfault, "double free") 5 runs in 5."""
    import subprocess
    import sys

    from ragtune.paths import repo_datasets_dir

    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", PARSE_PDFS_FROM_THREADS, str(repo_datasets_dir())],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert int(run.stdout.split()[0]) >= 4  # the sample manual and the bad PDFs, good and refused
