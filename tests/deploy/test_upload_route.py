"""The builder upload route: bad uploads are refused with a clear message and stored documents survive."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient

from serving.deploy import keys
from serving.deploy.server import build_deploy_app
from serving.deploy.upload_safety import UploadLimits


def _ingest(ws, paths):
    from retrieval.ingest import ingest_paths

    return ingest_paths(ws, paths, all_or_nothing=True)


def _stored(ws):
    from retrieval.documents import list_documents

    docs = {d["name"]: (d["doc_id"], d["chunks"]) for d in list_documents(ws)}
    files = {p.name: p.read_bytes() for p in ws.path("documents").iterdir() if p.is_file()}
    return docs, files


def test_bad_uploads_are_refused_and_nothing_is_lost(published, tiny_engine, sample_docs):
    limits = UploadLimits(max_file_mb=1, max_files=3, max_uncompressed_mb=5)
    app = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=_ingest, upload_limits=limits)
    pdf = (sample_docs / "product_manual_k7.pdf").read_bytes()
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        key = keys.create_key(published, "app", 100)
        r = client.post("/builder/test/documents", files={"files": ("manual.pdf", pdf, "application/pdf")},
                        headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401  # an end-user key is not a builder login

        r = client.post("/builder/test/documents", auth=("b", "pw"),
                        files=[("files", ("manual.pdf", pdf, "application/pdf")),
                               ("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))])
        assert r.status_code == 200, r.text
        assert [x["status"] for x in r.json()["results"]] == ["added", "added"]
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
        assert not list(published.root.parent.glob("faq.md"))


def test_http_upload_refuses_a_docx_bomb_in_under_a_second(published, tiny_engine, zip_bomb, docx_bomb, rss_watch):
    app = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=_ingest)
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
            assert watch.elapsed_s < 1.0 and watch.extra_mb < 200


def test_http_upload_failing_at_parse_stores_nothing(published, tiny_engine, sample_docs):
    app = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=_ingest)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        before = _stored(published)
        r = client.post("/builder/test/documents", auth=("b", "pw"),
                        files=[("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown")),
                               ("files", ("blank.md", b"   \n\n \t \n", "text/markdown"))])
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "nothing was stored" in message and "blank.md" in message and "\n" not in message
        assert _stored(published) == before
        leftovers = [p.name for sub in ("documents", "chunks") for p in published.path(sub).iterdir()]
        assert not [n for n in leftovers if n.startswith(".")]


def _follow(client, url: str, timeout: float = 240) -> dict:
    import time

    deadline = time.time() + timeout
    while True:
        r = client.get(url, auth=("b", "pw"))
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("running", "queued") or time.time() > deadline:
            return r.json()
        time.sleep(0.3)


def test_upload_starts_the_index_job_that_a_restarted_server_still_reports(published, tiny_engine, sample_docs):
    from retrieval.index import index_state
    from retrieval.service import upload_pipeline

    ingest, start_index = upload_pipeline()
    faq = [("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))]
    app = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=ingest, start_index=start_index)
    with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
        r = client.post("/builder/test/documents?index=1", auth=("b", "pw"), files=faq)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["status"] for x in body["results"]] == ["added"]  # the ingest's per-file result, in the reply
        job_id, follow = body["index"]["job"], body["index"]["follow"]
        assert job_id.startswith("index-") and follow == f"/builder/test/jobs/{job_id}"
        assert client.get(follow).status_code == 401  # a builder route: the password guards it
    # a new server over the same workspace (a restart) finds the job and follows it to its end
    restarted = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=ingest, start_index=start_index)
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
    from retrieval.service import upload_pipeline

    ingest, start_index = upload_pipeline()
    running = write_job_here(published, "index", "ragtune.operations", [])  # an index build in this process
    app = build_deploy_app(published, tiny_engine, builder_password="pw", ingest=ingest, start_index=start_index)
    try:
        with TestClient(app, base_url="http://localhost", headers={"X-Ragtune-Builder": "1"}) as client:
            r = client.post("/builder/test/documents?index=1", auth=("b", "pw"),
                            files=[("files", ("faq.md", (sample_docs / "faq.md").read_bytes(), "text/markdown"))])
            assert r.status_code == 200, r.text
            assert [x["status"] for x in r.json()["results"]] == ["added"]
            index = r.json()["index"]
            assert index["job"] is None and index["status"] == "not_started"
            assert running.id in index["error"] and "already running" in index["error"]
            assert client.get(f"/builder/test/jobs/{running.id}", auth=("b", "pw")).json()["status"] == "running"
        assert [d["name"] for d in list_documents(published)] == ["faq.md"]
    finally:
        with JobReporter(running.dir):
            pass
    assert get_job(published, running.id).status == "succeeded"
