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
