"""Bad uploads are refused with a sentence, before anything is stored."""

from __future__ import annotations

import io
import zipfile

import pytest

from ragtune.errors import BadInputError
from serving.deploy.upload_safety import UploadLimits, check_batch, check_file, read_limited, safe_filename


def office_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_good_documents_pass(sample_docs):
    for name in ("travel_policy.docx", "product_manual_k7.pdf", "faq.md", "security_policy.html"):
        checked = check_file(name, (sample_docs / name).read_bytes())
        assert checked.safe_name == name
    assert check_file("product_manual_k7.pdf", (sample_docs / "product_manual_k7.pdf").read_bytes()).pages >= 1


@pytest.mark.parametrize("name", ["../../etc/passwd.md", "..\\boot.ini.txt", "/abs/notes.md", "C:evil.md", "..",
                                  "sub/dir/file.md", "bad\x00name.md", "line\nbreak.md"])
def test_path_like_names_are_refused(name):
    with pytest.raises(BadInputError) as err:
        safe_filename(name)
    assert "name" in str(err.value)


def test_odd_names_are_cleaned_not_used_as_paths():
    assert safe_filename("Q3 report (final).md") == "Q3 report (final).md"
    assert safe_filename("CON.txt") == "_CON.txt"
    assert safe_filename("a<b>|c?.md") == "a_b__c_.md"
    assert len(safe_filename("x" * 500 + ".md")) <= 120
    with pytest.raises(BadInputError, match="hidden"):
        safe_filename(".bashrc")


def test_zip_bombs_are_refused():
    limits = UploadLimits(max_uncompressed_mb=5)
    bomb = office_zip({"word/document.xml": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000  # small on the wire
    with pytest.raises(BadInputError, match="archive bomb"):
        check_file("bomb.docx", bomb, limits)
    ratio_bomb = office_zip({"ppt/slides/slide1.xml": b"a" * (3 * 1024 * 1024)})
    with pytest.raises(BadInputError, match="compressed .*x"):
        check_file("deck.pptx", ratio_bomb, limits)
    many = office_zip({f"word/p{i}.xml": b"x" for i in range(60)})
    with pytest.raises(BadInputError, match="parts"):
        check_file("many.docx", many, UploadLimits(max_archive_entries=50))


def test_corrupt_fake_encrypted_and_wrong_files_are_refused(repo_bad_files):
    cases = {
        "corrupt.pdf": "damaged PDF",
        "not_really.pdf": "not a PDF",
        "encrypted_with_password.pdf": "password-protected",
        "empty.txt": "empty",
    }
    for name, message in cases.items():
        with pytest.raises(BadInputError, match=message):
            check_file(name, (repo_bad_files / name).read_bytes())
    with pytest.raises(BadInputError, match="not a valid DOCX"):
        check_file("broken.docx", b"PK\x03\x04 this is not a zip")
    with pytest.raises(BadInputError, match="binary data"):
        check_file("notes.txt", b"hello\x00\x01\x02")
    with pytest.raises(BadInputError, match="does not read"):
        check_file("archive.zip", office_zip({}))
    with pytest.raises(BadInputError, match="pages"):
        check_file("deck.pptx", office_zip({f"ppt/slides/slide{i}.xml": b"<s/>" for i in range(1, 6)}),
                   UploadLimits(max_pages=3))


def test_size_and_count_limits(tmp_path):
    limits = UploadLimits(max_file_mb=1, max_files=3, max_total_mb=2)
    with pytest.raises(BadInputError, match="larger than"):
        read_limited(io.BytesIO(b"x" * (2 * 1024 * 1024)), limits.max_file_bytes, "big.txt")
    with pytest.raises(BadInputError, match="over the 1 MB limit per file"):
        check_file("big.txt", b"x" * (1024 * 1024 + 1), limits)
    with pytest.raises(BadInputError, match="limit is 3"):
        check_batch([(f"f{i}.md", b"hi") for i in range(4)], limits)
    with pytest.raises(BadInputError, match="per upload"):
        check_batch([(f"f{i}.md", b"x" * 900_000) for i in range(3)], limits)
    with pytest.raises(BadInputError, match="nothing was stored.*corrupt.pdf") as err:
        check_batch([("ok.md", b"# fine"), ("corrupt.pdf", b"%PDF-1.4 garbage")], limits)
    assert "ok.md" not in str(err.value)


@pytest.fixture
def repo_bad_files(sample_docs):
    return sample_docs.parent / "bad_files"
