"""The ingest gate on what a folder can hide: hard links to files outside it, names that carry terminal or
bidi control characters, and spreadsheets that only looked like documents to the gate."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest

from app.cli import main
from ragtune.errors import BadInputError
from ragtune.ingest_gate import IngestLimits, UploadLimits, check_batch, gather, read_found
from retrieval.documents import all_chunks, list_documents
from retrieval.ingest import ingest_paths

SECRET = "# Salaries\n\nTOP SECRET: the CEO earns 9,999,999 a year.\n"
CONTROLS = [chr(c) for c in [*range(0x20), 0x7F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]]


def _ingest_json(capsys, workspace, *paths) -> tuple[int, dict]:
    code = main(["ingest", *map(str, paths), "--json", "--workspace", str(workspace.root)])
    return code, {r["name"]: (r["status"], r["reason"] or "") for r in json.loads(capsys.readouterr().out)["results"]}


def test_a_hard_link_to_a_file_outside_the_folder_is_refused(capsys, workspace, sample_docs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(SECRET)
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(sample_docs / "faq.md", docs / "faq.md")
    os.link(outside / "secret.md", docs / "salaries.md")
    (docs / "notes.md").write_text("# Notes\n\nThe pallet jack in bay 4 is the blue one.\n")
    os.link(docs / "notes.md", docs / "notes_again.md")  # both names inside the folder: nothing leaves it
    try:
        os.link("/etc/passwd", docs / "passwd.txt")  # the review's case, where /etc shares the file system
    except OSError:
        pass
    code, status = _ingest_json(capsys, workspace, docs)
    assert code == 1
    for name in {"salaries.md", "passwd.txt"} & set(status):
        assert status[name][0] == "failed" and "hard link" in status[name][1] and "\n" not in status[name][1]
    assert status["faq.md"][0] == "added" and status["notes.md"][0] == "added"
    assert status["notes_again.md"][0] == "duplicate"
    text = " ".join(c.text for c in all_chunks(workspace))
    assert "TOP SECRET" not in text and "root:" not in text


def test_a_file_swapped_for_a_hard_link_after_it_was_judged_is_not_read(sample_docs, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(sample_docs / "faq.md", docs / "faq.md")
    (tmp_path / "secret.md").write_text(SECRET)
    (item,) = gather([docs])
    assert item.problem is None
    (docs / "faq.md").unlink()
    os.link(tmp_path / "secret.md", docs / "faq.md")
    with pytest.raises(BadInputError, match="changed after it was checked"):
        read_found(item, IngestLimits())


def test_control_and_bidi_characters_are_stripped_from_stored_names(capsys, workspace, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    names = {"invoice\u202egnp.md": "invoicegnp.md", "bell\x07\x1b[2J.md": "bell[2J.md",
             "\u2066tab\there\u2069.md": "tabhere.md", "del\x7f.md": "del.md"}
    for i, raw in enumerate(names):
        (docs / raw).write_text(f"# Note {i}\n\nThe dock number for note {i} is {100 + i}.\n")
    code, status = _ingest_json(capsys, workspace, docs)
    assert code == 0 and sorted(status) == sorted(names.values()), status
    stored = [d["name"] for d in list_documents(workspace)]
    assert sorted(stored) == sorted(names.values())
    assert not any(ch in name for name in stored for ch in CONTROLS)


def _spreadsheet(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Override PartName="/xl/workbook.xml" ContentType="application/'
                   'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>')
        z.writestr("xl/workbook.xml", '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                   '<sheets><sheet name="Prices" sheetId="1"/></sheets></workbook>')
        z.writestr("xl/worksheets/sheet1.xml", '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
                   '2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>K7</t></is></c></row>'
                   '</sheetData></worksheet>')
    return path


@pytest.mark.parametrize("name", ["prices.xlsx", "prices.docx"])
def test_a_spreadsheet_is_refused_up_front_with_what_to_do(workspace, tmp_path, name):
    path = _spreadsheet(tmp_path / name)
    (result,) = ingest_paths(workspace, [path])
    assert result.status == "failed"
    assert result.reason == f"'{name}': spreadsheets (.xlsx) are not supported: save the sheet as CSV."
    with pytest.raises(BadInputError, match=r"spreadsheets \(\.xlsx\) are not supported: save the sheet as CSV"):
        check_batch([(name, path.read_bytes())], UploadLimits())
