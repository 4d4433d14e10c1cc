"""The ingest gate on the CLI and library paths: bombs, links out of the folder, all-or-nothing, concurrent ingests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from ragtune import ingest_gate
from ragtune.errors import BadInputError
from ragtune.ingest_gate import RATIO_GRACE_BYTES, IngestLimits, UploadLimits, check_archive
from retrieval.documents import all_chunks, list_documents
from retrieval.ingest import ingest_paths

REPO = Path(__file__).resolve().parents[2]
# A safety bound, not a speed target: the review saw 91 s and 16 GB on a DOCX bomb. How little of a bomb is
# inflated before the refusal is counted in bytes (test_a_bomb_is_refused_after_inflating_at_most_the_grace),
# never timed; the end-to-end tests print their time.
REFUSAL_EXTRA_MB = 200


def _json(capsys, argv) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def _stored_files(ws) -> set[str]:
    return {p.name for sub in ("documents", "chunks") for p in ws.path(sub).iterdir()}


def test_cli_refuses_a_docx_bomb_without_inflating_it(capsys, workspace, sample_docs, docx_bomb, rss_watch):
    ws = ["--workspace", str(workspace.root)]
    code, _ = _json(capsys, ["ingest", str(sample_docs / "faq.md"), "--json", *ws])  # warm: tokenizer loaded
    assert code == 0
    before = _stored_files(workspace)
    bomb = docx_bomb
    assert bomb.stat().st_size < 500_000
    with rss_watch() as watch:
        code, out = _json(capsys, ["ingest", str(bomb), "--json", *ws])
    print(f"CLI bomb refusal: {watch.elapsed_s:.3f} s, +{watch.extra_mb:.0f} MB peak RSS")
    (result,) = out["results"]
    assert code == 1 and result["status"] == "failed", result
    assert "archive bomb" in result["reason"] and "\n" not in result["reason"]
    assert [d["name"] for d in list_documents(workspace)] == ["faq.md"]
    assert _stored_files(workspace) == before
    assert watch.extra_mb < REFUSAL_EXTRA_MB


def _inflated_before_refusal(monkeypatch, bomb: Path, limits: IngestLimits) -> tuple[int, str]:
    """(bytes the gate inflated of one part, its sentence) for a bomb: a spy on its counter, nothing replaced."""
    seen = [0]
    real_add = ingest_gate._Budget.add

    def counting_add(budget, inflated, consumed):
        seen[0] = max(seen[0], budget.seen + inflated)
        return real_add(budget, inflated, consumed)

    monkeypatch.setattr(ingest_gate._Budget, "add", counting_add)
    with pytest.raises(BadInputError) as refused:
        check_archive(bomb.name, bomb.read_bytes(), limits, ext=bomb.suffix)
    return seen[0], str(refused.value)


def test_a_bomb_is_refused_after_inflating_at_most_the_grace(monkeypatch, docx_bomb, zip_bomb):
    """400 MB of zeros in 400 KB: under the local limit it is streamed and refused by its ratio once the grace
    (1 MB) is inflated, plus at most one 64 KB block; under the upload limit its directory refuses it unread."""
    inflated, reason = _inflated_before_refusal(monkeypatch, docx_bomb, IngestLimits())
    assert "compressed more than 100x" in reason and "archive bomb" in reason, reason
    assert RATIO_GRACE_BYTES < inflated <= RATIO_GRACE_BYTES + (1 << 16), inflated
    inflated, reason = _inflated_before_refusal(monkeypatch, docx_bomb, UploadLimits())
    assert "would expand to" in reason and inflated == 0, (inflated, reason)
    # 60 MB declared, under the upload limit: streamed, and refused by its ratio like the first.
    inflated, reason = _inflated_before_refusal(monkeypatch, zip_bomb("minutes.docx", inflated_mb=60), UploadLimits())
    assert "compressed more than 100x" in reason and inflated <= RATIO_GRACE_BYTES + (1 << 16), (inflated, reason)


@pytest.mark.parametrize("name,member", [("deck.pptx", "ppt/slides/slide1.xml"), ("sheet.xlsx", "xl/worksheets/sheet1.xml"),
                                         ("book.epub", "OEBPS/chapter1.xhtml"), ("notes.txt", "notes.txt")])
def test_every_zip_based_file_is_screened_before_parsing(workspace, zip_bomb, name, member):
    (result,) = ingest_paths(workspace, [zip_bomb(name, inflated_mb=40, member=member)])
    assert result.status == "failed" and "archive bomb" in result.reason, result


def test_links_out_of_the_folder_and_special_files_are_refused(capsys, workspace, sample_docs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Salaries\n\nTOP SECRET: the CEO earns 9,999,999 a year.\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(sample_docs / "faq.md", docs / "faq.md")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "salaries.md").symlink_to(outside / "secret.md")
    (docs / "faq_again.md").symlink_to(docs / "faq.md")  # a link that stays inside is fine
    (docs / "more").symlink_to(outside, target_is_directory=True)
    os.mkfifo(docs / "pipe.txt")  # reading it would block forever

    code, out = _json(capsys, ["ingest", str(docs), "--json", "--workspace", str(workspace.root)])
    status = {r["name"]: (r["status"], r["reason"] or "") for r in out["results"]}
    assert code == 1
    assert status["faq.md"][0] == "added" and status["faq_again.md"][0] == "duplicate"
    for name in ("passwd.txt", "salaries.md", "more"):
        assert status[name][0] == "failed" and "outside the folder" in status[name][1], (name, status[name])
    assert status["pipe.txt"][0] == "failed" and "not a regular file" in status["pipe.txt"][1]
    # A link to a folder, named by the user, is that folder: what it holds goes in.
    (tmp_path / "docs_link").symlink_to(docs, target_is_directory=True)
    code, out = _json(capsys, ["ingest", str(tmp_path / "docs_link"), "--json", "--workspace", str(workspace.root)])
    assert {r["name"]: r["status"] for r in out["results"]}["faq.md"] == "duplicate"
    # Named directly, a link is judged against its own folder.
    code, out = _json(capsys, ["ingest", str(docs / "passwd.txt"), "--json", "--workspace", str(workspace.root)])
    assert code == 1 and "outside the folder" in out["results"][0]["reason"]
    text = " ".join(c.text for c in all_chunks(workspace))
    assert "root:" not in text and "TOP SECRET" not in text
    assert [d["name"] for d in list_documents(workspace)] == ["faq.md"]


def test_all_or_nothing_includes_the_parse_stage(workspace, sample_docs, tmp_path):
    blank = tmp_path / "blank.md"
    blank.write_bytes(b"   \n\n \t \n")  # passes every upload check, has no text to parse
    with pytest.raises(BadInputError, match=r"nothing was stored: 'blank.md': no text was found") as err:
        ingest_paths(workspace, [sample_docs / "faq.md", sample_docs / "travel_policy.docx", blank],
                     all_or_nothing=True)
    assert "\n" not in str(err.value)
    assert list_documents(workspace) == [] and _stored_files(workspace) == set()
    results = ingest_paths(workspace, [sample_docs / "faq.md", sample_docs / "travel_policy.docx"], all_or_nothing=True)
    assert [r.status for r in results] == ["added", "added"]
    assert len(_stored_files(workspace)) == 4  # two originals, two parsed-block files, no temporary left


def test_concurrent_ingests_of_one_folder_report_duplicates(tmp_path, sample_docs):
    from ragtune.workspace import Workspace

    ws = Workspace.create("shared", root=tmp_path / "home" / "workspaces")
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "app.cli", "ingest", str(sample_docs), "--workspace", "shared", "--json"]
    runs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outs):
        assert run.returncode == 0, err[-2000:]
        assert "IntegrityError" not in out + err
    per_file: dict[str, list[str]] = {}
    for out, _ in outs:
        for r in json.loads(out)["results"]:
            per_file.setdefault(r["name"], []).append(r["status"])
    assert len(per_file) == 8
    assert all(sorted(s) == ["added", "duplicate"] for s in per_file.values()), per_file
    docs = list_documents(ws)
    assert sorted(d["name"] for d in docs) == sorted(per_file) and all(d["chunks"] > 0 for d in docs)
    assert len(_stored_files(ws)) == 16


def test_concurrent_ingests_in_one_process_report_duplicates(workspace, sample_docs):
    """The builder app and the deploy server ingest from several threads of one process."""
    import threading

    barrier, outcomes = threading.Barrier(3), []

    def run():
        barrier.wait()
        outcomes.append(ingest_paths(workspace, [sample_docs]))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 3
    for name in {r.name for r in outcomes[0]}:
        statuses = sorted(r.status for results in outcomes for r in results if r.name == name)
        assert statuses == ["added", "duplicate", "duplicate"], (name, statuses)
    assert len(list_documents(workspace)) == 8 and len(_stored_files(workspace)) == 16
