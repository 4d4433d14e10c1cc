"""The builder upload route: bad uploads are refused with a clear message and stored documents survive;
good ones are staged and ingested by a job the reply names (nothing is parsed in the request)."""

from __future__ import annotations

import io
import time
import zipfile

from fastapi.testclient import TestClient

from app.wiring import deploy_uploads
from serving.deploy import keys
from serving.deploy.server import build_deploy_app
from serving.deploy.upload_safety import UploadLimits

from .conftest import auth, chat_body

_ingest = deploy_uploads()


def _staging(ws) -> list[str]:
    """What the workspace's staging area holds (each upload's folder goes when its job ends)."""
    root = ws.path("staging")
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _accepted(client, r) -> dict:
    """The 202 of an upload, followed to its job's end."""
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["follow"] == f"/builder/test/jobs/{body['job']}" and body["job"].startswith("ingest-")
    return _follow(client, body["follow"])


def _stored(ws):
    from retrieval.documents import list_documents

    docs = {d["name"]: (d["doc_id"], d["chunks"]) for d in list_documents(ws)}
    files = {p.name: p.read_bytes() for p in ws.path("documents").iterdir() if p.is_file()}
    return docs, files


def test_bad_uploads_are_refused_and_nothing_is_lost(published, tiny_engine, sample_docs):
    limits = UploadLimits(max_file_mb=1, max_files=3, max_uncompressed_mb=5)
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest, upload_limits=limits)
    pdf = (sample_docs / "product_manual_k7.pdf").read_bytes()
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        key = keys.create_key(published, "app", 100)
        r = client.post("/builder/test/documents", files={"files": ("manual.pdf", pdf, "application/pdf")},
                        headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401  # an end-user key is not a builder login

        r = client.post("/builder/test/documents", auth=("b", "pw"),
                        files=[("files", ("manual.pdf", pdf, "application/pdf")),
                               ("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))])
        assert r.json()["files"] == ["manual.pdf", "faq.md"]
        done = _accepted(client, r)
        assert done["status"] == "succeeded", done
        assert [x["status"] for x in done["result"]["results"]] == ["added", "added"]
        assert _staging(published) == []  # the job removed its staged copies
        before = _stored(published)
        assert set(before[0]) == {"manual.pdf", "faq.md"}

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("[Content_Types].xml", "<Types/>")
            z.writestr("word/document.xml", b"\0" * (30 * 1024 * 1024))
        bad_uploads = {
            "oversize": ([("files", ("big.md", b"# big\n" + b"x" * (1024 * 1024 + 10), "text/markdown"))], 413,
                         "larger than"),
            "zip bomb": ([("files", ("report.docx", buf.getvalue(), "application/octet-stream"))], 400,
                         "archive bomb"),
            "path traversal": ([("files", ("../../faq.md", b"# overwritten", "text/markdown"))], 400, "looks like a path"),
            # Same name as the stored PDF: a corrupt replacement must not evict the good one.
            "corrupt pdf": ([("files", ("manual.pdf", b"%PDF-1.7\n garbage", "application/pdf"))], 400, "damaged PDF"),
            "mixed batch": ([("files", ("new.md", b"# new doc", "text/markdown")),
                             ("files", ("manual.pdf", b"not a pdf", "application/pdf"))], 400, "nothing was stored"),
            "too many": ([("files", (f"n{i}.md", b"# n", "text/markdown")) for i in range(4)], 400, "nothing was stored"),
        }
        for label, (files, status, message) in bad_uploads.items():
            r = client.post("/builder/test/documents", auth=("b", "pw"), files=files)
            assert r.status_code == status, (label, r.text)
            assert message in r.json()["error"]["message"], (label, r.json())
            assert _stored(published) == before, label
        # a malformed flag is one sentence naming it, and nothing is read
        r = client.post("/builder/test/documents?index=maybe", auth=("b", "pw"),
                        files=[("files", ("faq.md", b"# a new faq", "text/markdown"))])
        assert r.status_code == 400 and "Invalid value for 'index'" in r.json()["error"]["message"], r.text
        assert _stored(published) == before
        assert not list(published.root.parent.glob("faq.md"))
        assert _staging(published) == []  # refused in the request: nothing was staged


def test_http_upload_refuses_a_docx_bomb_without_inflating_it(published, tiny_engine, zip_bomb, docx_bomb, rss_watch):
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    # 400 MB declared: refused from the zip directory; 60 MB: under the budget, refused by its ratio while streaming.
    bombs = [docx_bomb, zip_bomb("minutes.docx", inflated_mb=60)]
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        before = _stored(published)
        for bomb in bombs:
            with rss_watch() as watch:
                r = client.post("/builder/test/documents", auth=("b", "pw"),
                                files=[("files", (bomb.name, bomb.read_bytes(), "application/octet-stream"))])
            print(f"HTTP bomb refusal ({bomb.name}): {watch.elapsed_s:.3f} s, +{watch.extra_mb:.0f} MB peak RSS")
            assert r.status_code == 400 and "archive bomb" in r.json()["error"]["message"], r.text
            assert _stored(published) == before
            assert watch.extra_mb < 200  # how little is inflated: tests/retrieval/test_ingest_gate.py, in bytes


def test_http_upload_failing_at_parse_stores_nothing(published, tiny_engine, sample_docs):
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        before = _stored(published)
        r = client.post("/builder/test/documents", auth=("b", "pw"),
                        files=[("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown")),
                               ("files", ("blank.md", b"   \n\n \t \n", "text/markdown"))])
        done = _accepted(client, r)  # it passes the request's checks: the job's parse refuses it
        assert done["status"] == "failed", done
        message = done["error"]
        assert "nothing was stored" in message and "blank.md" in message and "\n" not in message
        assert _stored(published) == before
        assert _staging(published) == []
        leftovers = [p.name for sub in ("documents", "chunks") for p in published.path(sub).iterdir()]
        assert not [n for n in leftovers if n.startswith(".")]


def _follow(client, url: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while True:
        r = client.get(url, auth=("b", "pw"))
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("running", "queued") or time.time() > deadline:
            return r.json()
        time.sleep(0.3)


def test_upload_starts_the_index_job_that_a_restarted_server_still_reports(published, tiny_engine, sample_docs):
    from retrieval.index import index_state

    faq = [("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))]
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        r = client.post("/builder/test/documents?index=1", auth=("b", "pw"), files=faq)
        assert r.status_code == 202 and r.json()["index"] == "after the files are stored", r.text
        assert client.get(r.json()["follow"]).status_code == 401  # a builder route: the password guards it
        done = _accepted(client, r)
        assert [x["status"] for x in done["result"]["results"]] == ["added"]  # the ingest's per-file result
        job_id, follow = done["result"]["index"]["job"], done["result"]["index"]["follow"]
        assert job_id.startswith("index-") and follow == f"/builder/test/jobs/{job_id}"
    # a new server over the same workspace (a restart) finds the job and follows it to its end
    restarted = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    with TestClient(restarted, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        done = _follow(client, follow)
        assert done["status"] == "succeeded" and done["kind"] == "index", done
        assert done["done"] == done["total"] == done["result"]["chunks"] > 0
        assert index_state(published)["built"] and not index_state(published)["stale"]
        r = client.get("/builder/test/jobs/no-such-job", auth=("b", "pw"))
        assert r.status_code == 404 and "no-such-job" in r.json()["error"]["message"]


def test_upload_while_an_index_job_runs_stores_the_files_and_names_the_running_job(published, tiny_engine,
                                                                                   sample_docs):
    from ragtune.jobs import JobReporter, get_job, write_job_here
    from retrieval.documents import list_documents

    running = write_job_here(published, "index", "app.jobs_entry", [])  # an index build in this process
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    try:
        with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
            r = client.post("/builder/test/documents?index=1", auth=("b", "pw"),
                            files=[("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))])
            done = _accepted(client, r)
            assert done["status"] == "succeeded", done
            assert [x["status"] for x in done["result"]["results"]] == ["added"]
            index = done["result"]["index"]
            assert index["job"] is None and index["status"] == "not_started"
            assert running.id in index["error"] and "already running" in index["error"]
            assert client.get(f"/builder/test/jobs/{running.id}", auth=("b", "pw")).json()["status"] == "running"
        assert [d["name"] for d in list_documents(published)] == ["faq.md"]
    finally:
        with JobReporter(running.dir):
            pass
    assert get_job(published, running.id).status == "succeeded"


# ------------------------------------------------------------------ the upload is a job: no parse in the request

def _paragraphs(megabytes: float) -> bytes:
    """HTML of bare paragraphs: under every cap of the gate, about 6 s and 150 MB to parse per MB."""
    return b"<html><body>" + b"<p>x</p>" * int(megabytes * 125_000) + b"</body></html>"


def test_a_slow_upload_returns_at_once_and_blocks_no_chat(published, tiny_engine, sample_docs):
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    files = [("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown")),
             ("files", ("page.html", _paragraphs(1.5), "text/html"))]
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        key = keys.create_key(published, "app", 100)
        t0 = time.monotonic()
        r = client.post("/builder/test/documents", auth=("b", "pw"), files=files)
        answered_s = time.monotonic() - t0
        assert r.status_code == 202, r.text
        follow = r.json()["follow"]
        assert client.get(follow, auth=("b", "pw")).json()["status"] == "running"
        t0 = time.monotonic()
        chat = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
        chat_s = time.monotonic() - t0
        assert chat.status_code == 200, chat.text
        assert client.get(follow, auth=("b", "pw")).json()["status"] == "running"  # the parse went on meanwhile
        print(f"upload answered in {answered_s:.2f} s, a chat during its parse in {chat_s:.2f} s")
        assert answered_s < 5 and chat_s < 5  # bounds, not targets: the parse alone takes ~9 s here
    # The client is gone: the job goes on, stores both files and removes its staging folder.
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        done = _follow(client, follow)
    assert done["status"] == "succeeded", done
    assert [x["status"] for x in done["result"]["results"]] == ["added", "added"]
    assert set(_stored(published)[0]) == {"faq.md", "page.html"}
    assert _staging(published) == []


def test_a_cancelled_upload_job_stores_nothing_and_removes_its_staging(published, tiny_engine, sample_docs):
    from ragtune.jobs import cancel_job, wait_job

    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        r = client.post("/builder/test/documents", auth=("b", "pw"),
                        files=[("files", ("page.html", _paragraphs(5), "text/html"))])  # 30 s or more to parse
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]
        assert len(_staging(published)) == 1
        log = published.path("jobs", job_id, "log.jsonl")
        _wait_for(lambda: log.exists() and b'"step"' in log.read_bytes())  # the job is at its file
        time.sleep(1.0)  # now parsing it
        t0 = time.monotonic()
        cancel_job(published, job_id)
        job = wait_job(published, job_id, timeout=60, poll=0.1)
        stop_s = time.monotonic() - t0
    assert job.status == "cancelled", (job.status, job.error)
    assert stop_s < 15, stop_s  # the parse is abandoned, not waited for (it has 60 s)
    assert _stored(published) == ({}, {}) and _staging(published) == []


def _wait_for(condition, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_staging_left_by_a_crash_is_removed_at_start(published, tiny_engine, sample_docs):
    import json
    import os

    from ragtune.ingest_gate import new_staging
    from ragtune.jobs import write_job_here

    crashed = new_staging(published)  # its server died before the job started
    (crashed / ".owner").write_text(json.dumps({"pid": 2 ** 22 + 1, "created": time.time()}))
    (crashed / "0000").mkdir()
    (crashed / "0000" / "faq.md").write_bytes(b"# left behind")
    killed = new_staging(published)  # its job was killed before it could clean up
    stopped = write_job_here(published, "ingest", "app.jobs_entry", [],
                             config={"operation": "ingest", "config": {"staged": str(killed)}})
    (stopped.dir / "job.json").write_text((stopped.dir / "job.json").read_text().replace(
        f'"pid": {os.getpid()}', '"pid": 1073741'))  # no such process: the job reads "stopped"
    live = new_staging(published)  # an upload being staged by a live server right now
    assert len(_staging(published)) == 3
    app = build_deploy_app(published, tiny_engine, builder_password="pw", start_ingest=_ingest)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}):
        assert _staging(published) == [live.name]
