"""Documents tab: drag-and-drop upload with a result per file, the document table, chunk preview, delete."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus

from .common import guarded, log, open_ws

RESULT_COLUMNS = ["File", "Result", "Chunks", "Details"]
DOC_COLUMNS = ["Document", "Type", "Pages", "Chunks", "Size", "Added", "Id"]


def _size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def documents_table(ws_name):
    from retrieval.documents import list_documents

    docs = list_documents(open_ws(ws_name)) if ws_name else []
    rows = [[d["name"], d.get("mime") or "", d.get("pages") or "", d.get("chunks", 0), _size(d.get("size")),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(d["added_at"])) if d.get("added_at") else "",
             d["doc_id"]] for d in docs]
    choices = [(f"{d['name']} ({d.get('chunks', 0)} chunks)", d["doc_id"]) for d in docs]
    return pd.DataFrame(rows, columns=DOC_COLUMNS), gr.update(choices=choices, value=choices[0][1] if choices else None)


def _label(status: str) -> str:
    return {"added": "added", "duplicate": "already there", "failed": "failed"}.get(status, status)


def upload_folder() -> Path:
    """Where Gradio keeps the files dropped on the app ($GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _inside(path, root: Path) -> Path | None:
    try:
        path = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return path if root in path.parents else None


def _prune(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to `root` while they are empty."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def stage_uploads(paths: list[Path]) -> list[Path]:
    """Move the dropped files out of Gradio's shared cache (where a file sits at a path named by its content,
    so two drops of one file share it) into a folder of this ingest's own, inside the same upload folder
    (a rename, nothing copied). Paths outside Gradio's folder are left as they are."""
    root = upload_folder()
    own = root / f"ragtune-ingest-{secrets.token_hex(8)}"
    staged = []
    for i, p in enumerate(paths):
        src = _inside(p, root)
        if src is None:
            staged.append(p)
            continue
        dest = own / str(i) / src.name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(src, dest)
        except OSError as exc:
            discard_uploads([*staged, *paths[i:]])
            if isinstance(exc, FileNotFoundError):
                raise BadInputError(f"The upload of {src.name} is gone from the app's cache; drop it again.") from None
            raise
        _prune(src.parent, root)
        staged.append(dest)
    return staged


def discard_uploads(paths) -> int:
    """Delete the files among `paths` that lie in Gradio's upload folder (and their emptied folders); a path
    anywhere else (a file named on the command line) is never touched. Returns how many went."""
    root, gone = upload_folder(), 0
    for p in paths:
        p = _inside(p, root)
        if p is None:
            continue
        try:
            p.unlink()
            gone += 1
        except FileNotFoundError:
            pass
        except OSError:
            continue
        _prune(p.parent, root)
    return gone


def _job_paths(job) -> list[str]:
    return list(((job.config or {}).get("config") or {}).get("paths", []))


def discard_read_uploads(ws, job_id: str) -> int:
    """Once an ingest job has read every file it was given (each stored, already there or refused: the job
    succeeded), its uploads are deleted from Gradio's folder; the workspace keeps its own copy of each stored
    one. A cancelled, stopped or failed job keeps them for Resume."""
    from ragtune.jobs import get_job

    job = get_job(ws, job_id)
    return discard_uploads(_job_paths(job)) if job.status == JobStatus.SUCCEEDED else 0


def _discard_superseded_uploads(ws) -> None:
    """Uploads left by finished ingest jobs: those the app can no longer resume (a newer ingest is starting)
    and those that succeeded while no page followed them (the app had stopped)."""
    from ragtune.jobs import list_jobs
    from retrieval.service import INGEST

    for job in list_jobs(ws, kind=INGEST.kind):
        if job.finished:
            discard_uploads(_job_paths(job))


def _discard_when_read(ws, job_id: str) -> None:
    """In the background too, so a page closed mid-ingest leaves nothing behind in Gradio's folder."""
    from ragtune.jobs import get_job

    def watch():
        try:
            while not get_job(ws, job_id).finished:
                time.sleep(0.5)
            discard_read_uploads(ws, job_id)
        except Exception:  # the workspace or job was deleted meanwhile: nothing to follow
            log.debug("upload cleanup for job %s stopped", job_id, exc_info=True)

    threading.Thread(target=watch, name=f"ragtune-uploads-{job_id}", daemon=True).start()


def ingest_files(ws_name, files, progress=gr.Progress()):
    """Add uploaded files as an ingest job (the same operation as `ragtune ingest`), yielding each file's
    result as the job reports it. One bad file never stops the batch. The uploads leave Gradio's shared
    cache at once and are deleted once the job has read them (``discard_read_uploads``)."""
    from ragtune import operations
    from retrieval.service import INGEST, IngestConfig

    paths = [Path(f if isinstance(f, str) else f.name) for f in (files or [])]
    try:
        ws = open_ws(ws_name)
        if not paths:
            raise gr.Error("Drop one or more files first.")
        paths = stage_uploads(paths)
        _discard_superseded_uploads(ws)
        docs, choices = documents_table(ws_name)
        yield pd.DataFrame([[p.name, "waiting", "", ""] for p in paths], columns=RESULT_COLUMNS), docs, choices
        job = operations.start(ws, INGEST, IngestConfig(paths=[str(p) for p in paths]))
    except BaseException:
        discard_uploads(paths)  # refused before a job took them
        raise
    _discard_when_read(ws, job.id)
    yield from _follow_ingest(ws_name, job, progress)


def _follow_ingest(ws_name, job, progress):
    """Each file's row as the ingest job reports it (the newest run of the job: a resumed one reports
    the files stored before it as already there), until the job ends; then the documents table."""
    from ragtune.jobs import get_job
    from retrieval.service import file_results

    ws = open_ws(ws_name)
    names = [Path(p).name for p in ((job.config or {}).get("config") or {}).get("paths", [])]
    rows = [[name, "waiting", "", ""] for name in names]
    shown = None
    while True:
        job = get_job(ws, job.id)
        results = file_results(job, latest_run=True)[:len(rows)]
        for i, r in enumerate(results):
            rows[i][1:] = [_label(r["status"]), r["chunks"], r["reason"] or ""]
        if not job.finished and len(results) < len(rows):
            rows[len(results)][1] = "reading..."
            progress((len(results), len(rows)), desc=f"Reading {rows[len(results)][0]}")
        if job.finished:
            for row in rows[len(results):]:  # the job stopped before these files
                row[1:] = (["cancelled", 0, "not read: the ingest was cancelled; Resume reads it"]
                           if job.status == JobStatus.CANCELLED else ["failed", 0, job.error or "not read: the ingest job ended first"])
        state = [tuple(r) for r in rows]
        if state != shown:
            shown = state
            yield pd.DataFrame(rows, columns=RESULT_COLUMNS), gr.skip(), gr.skip()
        if job.finished:
            break
        time.sleep(0.3)
    ok = sum(1 for r in rows if r[1] == "added")
    failed = sum(1 for r in rows if r[1] == "failed")
    msg = f"{ok} of {len(rows)} file(s) added" + (f", {failed} failed (see Details)" if failed else "") + "."
    if job.status == JobStatus.CANCELLED:
        gr.Warning(msg + " The ingest was cancelled: Resume reads the files it did not reach.")
    else:
        (gr.Warning if failed else gr.Info)(msg + " Build the index on the Build tab to use them in answers.")
    discard_read_uploads(ws, job.id)
    docs, choices = documents_table(ws_name)
    yield pd.DataFrame(rows, columns=RESULT_COLUMNS), docs, choices


def _latest_ingest(ws_name):
    from ragtune import operations
    from retrieval.service import INGEST

    return operations.latest(open_ws(ws_name), INGEST) if ws_name else None


def cancel_ingest(ws_name) -> None:
    """Cancel the newest running ingest: the same cancel as `ragtune jobs cancel` (it stops between files;
    every file stored so far stays)."""
    from ragtune import operations

    job = _latest_ingest(ws_name)
    if job is None or job.finished:
        raise BadInputError("No upload is being read.")
    operations.cancel(open_ws(ws_name), job.id)
    gr.Info("Cancelling: the upload stops after the current file; the files read so far stay.")


def resume_ingest(ws_name, progress=gr.Progress()):
    """Resume the newest stopped ingest under its id (only the files not stored yet are read) and follow it."""
    from ragtune import operations

    job = _latest_ingest(ws_name)
    if job is None or not job.status.resumable:
        raise BadInputError("There is no stopped upload to resume.")
    job = operations.resume(open_ws(ws_name), job.id)
    _discard_when_read(open_ws(ws_name), job.id)
    yield from _follow_ingest(ws_name, job, progress)


def preview(ws_name, doc_id):
    if not ws_name or not doc_id:
        return "Pick a document to see how it was cut into passages."
    from retrieval.documents import document_chunks

    chunks = document_chunks(open_ws(ws_name), doc_id)
    if not chunks:
        return "This document has no passages."
    parts = [f"**{chunks[0].doc}**: **{len(chunks)} passages**" + (" (first 20 shown)" if len(chunks) > 20 else "") + "\n"]
    for c in chunks[:20]:
        where = " / ".join(str(x) for x in (f"page {c.page}" if c.page else None, c.section) if x)
        parts.append(f"---\n**#{c.chunk_id}**" + (f" ({where})" if where else "") + f" - {c.tokens} tokens\n\n{c.text}\n")
    return "\n".join(parts)


def delete(ws_name, doc_id):
    from retrieval.documents import delete_document

    if not doc_id:
        raise gr.Error("Pick a document to delete.")
    delete_document(open_ws(ws_name), doc_id)
    gr.Info("Document deleted. Rebuild the index so answers stop using it.")
    return documents_table(ws_name)


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks) -> None:
    gr.Markdown("Drop your documents here: PDF, Word, PowerPoint, HTML, Markdown, text, CSV, e-mail, RTF. "
                "Each file is read, cut into passages and stored in the open workspace.")
    upload = gr.File(label="Drop files here (several at once)", file_count="multiple", elem_id="upload-files")
    with gr.Row():
        cancel_btn = gr.Button("Cancel upload", variant="stop", elem_id="ingest-cancel", scale=0)
        resume_btn = gr.Button("Resume upload", elem_id="ingest-resume", scale=0)
    results = gr.Dataframe(headers=RESULT_COLUMNS, label="Upload results", interactive=False, elem_id="ingest-results")
    docs = gr.Dataframe(headers=DOC_COLUMNS, label="Documents in this workspace", interactive=False, elem_id="docs-table")
    with gr.Row():
        doc_select = gr.Dropdown(label="Document", choices=[], elem_id="doc-select", scale=3)
        delete_btn = gr.Button("Delete document", variant="stop", elem_id="doc-delete", scale=1)
    chunks = gr.Markdown(elem_id="doc-chunks", max_height=500)

    upload.upload(guarded(ingest_files), [ws_select, upload], [results, docs, doc_select], api_name="ingest")
    cancel_btn.click(guarded(cancel_ingest), [ws_select], None, api_visibility="private")
    resume_btn.click(guarded(resume_ingest), [ws_select], [results, docs, doc_select], api_visibility="private")
    doc_select.change(guarded(preview), [ws_select, doc_select], [chunks], show_progress="hidden")
    delete_btn.click(guarded(delete), [ws_select, doc_select], [docs, doc_select])
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(documents_table), [ws_select], [docs, doc_select], show_progress="hidden")
