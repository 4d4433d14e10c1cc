"""The Build and Documents screens' jobs in the browser: an index build is cancelled and resumed from the
Build card (the same cancel and resume as `ragtune jobs cancel/resume`), and the workspace picked in the
header survives an immediate reload. The tiny model; the real embedder on a generated document whose
words are new to every run, so no cached vector makes the build too quick to cancel."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from .conftest import app_fixture, open_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


running_app = app_fixture("build-jobs-home", "jobs")


def _workspace(app, name: str):
    from ragtune.workspace import Workspace

    return Workspace.create(name, root=app.home / "workspaces", exist_ok=True)


def _wait_workspace(page, name: str, timeout: int = 60_000) -> None:
    page.wait_for_function("n => { const e = document.querySelector('#workspace-select input');"
                           " return e && e.value === n; }", arg=name, timeout=timeout)


def _pick_workspace(page, name: str) -> None:
    page.locator("#workspace-select input").click()
    page.get_by_role("option", name=name, exact=True).click()
    _wait_workspace(page, name)


def _index_job(page) -> dict:
    return page.evaluate("() => { const e = document.querySelector('#index-job');"
                         " return e ? {status: e.dataset.status, job: e.dataset.job, done: +e.dataset.done,"
                         " total: +e.dataset.total} : {}; }")


def _wait_index_job(page, condition: str, arg=None, timeout: int = 300_000) -> dict:
    page.wait_for_function(f"a => {{ const e = document.querySelector('#index-job'); return e && ({condition}); }}",
                           arg=arg, timeout=timeout)
    return _index_job(page)


def _big_workspace(app, name: str):
    """A workspace with one document of ~1100 short passages (four embedding batches and more)."""
    from retrieval.ingest import ingest_paths
    from retrieval.settings import save_settings

    ws = _workspace(app, name)
    words = (REPO / "datasets" / "sample" / "faq.md").read_text(encoding="utf-8").split()
    rnd = random.Random(uuid.uuid4().hex)
    paragraphs = [" ".join(rnd.choice(words) for _ in range(40)) + "." for _ in range(530)]
    doc = app.home / f"{name}-handbook.md"
    doc.write_text("# Handbook\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    save_settings(ws, chunk_tokens=32, overlap_tokens=0)
    ingest_paths(ws, [doc])
    return ws


def test_picked_workspace_survives_an_immediate_reload(browser, running_app):
    _workspace(running_app, "jobs-other")
    context, page = open_page(browser, running_app.url)
    _wait_workspace(page, "jobs")
    _pick_workspace(page, "jobs-other")
    page.reload()  # at once: nothing else has happened since the pick
    _wait_workspace(page, "jobs-other", timeout=30_000)
    # and it stays there once the page's load event has run (the Documents table is filled by it)
    page.get_by_role("tab", name="Build").click()
    page.wait_for_function("() => /Index: not built yet/.test(document.querySelector('#index-status').innerText)")
    assert page.locator("#workspace-select input").input_value() == "jobs-other"
    context.close()


def test_index_build_is_cancelled_and_resumed_from_the_build_card(browser, running_app):
    from ragtune.jobs import get_job, read_log
    from retrieval.documents import all_chunks

    ws = _big_workspace(running_app, "jobs-big")
    context, page = open_page(browser, running_app.url)
    page.locator("#workspace-select input").wait_for()
    if page.locator("#workspace-select input").input_value() != "jobs-big":
        _pick_workspace(page, "jobs-big")
    page.get_by_role("tab", name="Build").click()
    # the card's settings are the workspace's (32-token passages), so the build embeds all ~1100 of them
    page.locator("#index-advanced").get_by_text("Advanced").first.click()
    page.wait_for_function("() => { const e = document.querySelector('#chunk-size input[type=number]');"
                           " return e && e.value === '32'; }")
    page.locator("#index-job").wait_for(state="attached")
    page.locator("#build-index").click()
    running = _wait_index_job(page, "e.dataset.status === 'running' && +e.dataset.done >= 256", timeout=180_000)
    assert running["total"] > 1000, running
    job_id = running["job"]

    page.locator("#index-cancel").click()
    cancelled = _wait_index_job(page, "e.dataset.status === 'cancelled' && e.dataset.job === a", arg=job_id)
    assert 0 < cancelled["done"] < cancelled["total"], cancelled
    assert "cancelled" in page.locator("#index-job").inner_text()
    assert "not built yet" in page.locator("#index-status").inner_text()  # no half-built index
    assert get_job(ws, job_id).status == "cancelled"

    page.locator("#index-resume").click()
    _wait_index_job(page, "e.dataset.status === 'running' && e.dataset.job === a", arg=job_id, timeout=60_000)
    _wait_index_job(page, "e.dataset.status === 'succeeded' && e.dataset.job === a", arg=job_id)
    page.wait_for_function("() => document.querySelector('#index-status').innerText.includes('Index ready')")
    job = get_job(ws, job_id)
    # The index holds every passage. The job's total counts the texts it had to embed, which leaves out a
    # text already embedded (a repeated passage, or one in the machine-wide cache): one, in one full run.
    chunks = len(all_chunks(ws))
    assert job.status == "succeeded" and job.result["chunks"] == chunks >= cancelled["total"]
    # the resumed run embedded only what the cancelled one had not (at least the batches it reported done)
    rows = read_log(job.log_path)[0]
    second_start = [i for i, r in enumerate(rows) if r.get("event") == "start"][1]
    first_step = next(r for r in rows[second_start:] if r.get("label") == "embedding chunks")
    assert 0 < first_step["total_steps"] <= cancelled["total"] - cancelled["done"]
    assert "Traceback" not in page.locator("body").inner_text()
    context.close()


def _results(page) -> str:
    return page.locator("#ingest-results").inner_text()


def test_an_upload_is_cancelled_and_resumed_from_the_documents_screen(browser, running_app, tmp_path):
    from ragtune.jobs import list_jobs
    from retrieval.documents import list_documents

    ws = _workspace(running_app, "jobs-ingest")
    words = (REPO / "datasets" / "sample" / "faq.md").read_text(encoding="utf-8").split()
    rnd = random.Random(uuid.uuid4().hex)
    files = []
    for n in range(24):  # each ~100 KB: about half a second of reading and cutting apiece
        doc = tmp_path / f"memo-{n:02d}.md"
        doc.write_text(f"# Memo {n}\n\n" + "\n\n".join(" ".join(rnd.choice(words) for _ in range(40)) + "."
                                                       for _ in range(400)), encoding="utf-8")
        files.append(str(doc))
    context, page = open_page(browser, running_app.url)
    page.locator("#workspace-select input").wait_for()
    page.wait_for_timeout(1000)  # the load event may still open the workspace this browser remembers
    if page.locator("#workspace-select input").input_value() != "jobs-ingest":
        _pick_workspace(page, "jobs-ingest")
    page.get_by_role("tab", name="Documents").click()
    page.locator("#upload-files input[type=file]").set_input_files(files)
    page.wait_for_function("() => /\\badded\\b/.test(document.querySelector('#ingest-results').innerText)",
                           timeout=180_000)
    page.locator("#ingest-cancel").click()
    page.wait_for_function("() => { const t = document.querySelector('#ingest-results').innerText;"
                           " return /cancelled/.test(t) && !/reading|waiting/.test(t); }", timeout=120_000)
    (job,) = list_jobs(ws, kind="ingest")
    assert job.status == "cancelled"
    stored = len(list_documents(ws))
    assert 0 < stored < len(files)
    assert _results(page).count("cancelled") >= len(files) - stored

    page.locator("#ingest-resume").click()
    page.wait_for_function("n => { const t = document.querySelector('#ingest-results').innerText;"
                           " return (t.match(/\\b(added|already there)\\b/g) || []).length === n"
                           " && !/cancelled|reading|waiting/.test(t); }", arg=len(files), timeout=180_000)
    (resumed,) = list_jobs(ws, kind="ingest")
    assert resumed.id == job.id and resumed.status == "succeeded"
    assert len(list_documents(ws)) == len(files)
    assert _results(page).count("already there") == stored  # the files the cancelled run had stored
    assert "Traceback" not in page.locator("body").inner_text()
    context.close()
