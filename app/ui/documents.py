"""Documents tab: drag-and-drop upload with a result per file, the document table, chunk preview, delete."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from app.wiring import OPERATIONS
from ragtune import operations
from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus, cancel_job, get_job
from retrieval.documents import delete_document, document_chunks, list_documents
from retrieval.service import INGEST, IngestConfig, file_results

from .common import guarded, open_ws
from .uploads import discard_read_uploads, discard_superseded_uploads, discard_uploads, discard_when_read, stage_uploads

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
    docs = list_documents(open_ws(ws_name)) if ws_name else []
    rows = [[d["name"], d.get("mime") or "", d.get("pages") or "", d.get("chunks", 0), _size(d.get("size")),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(d["added_at"])) if d.get("added_at") else "",
             d["doc_id"]] for d in docs]
    choices = [(f"{d['name']} ({d.get('chunks', 0)} chunks)", d["doc_id"]) for d in docs]
    return pd.DataFrame(rows, columns=DOC_COLUMNS), gr.update(choices=choices, value=choices[0][1] if choices else None)


def _label(status: str) -> str:
    return {"added": "added", "duplicate": "already there", "failed": "failed"}.get(status, status)


def ingest_files(ws_name, files, progress=gr.Progress()):
    """Add uploaded files as an ingest job (the same operation as `ragtune ingest`), yielding each file's
    result as the job reports it. One bad file never stops the batch. The uploads leave Gradio's shared
    cache at once and are deleted once the job has read them (``discard_read_uploads``)."""
    paths = [Path(f if isinstance(f, str) else f.name) for f in (files or [])]
    try:
        ws = open_ws(ws_name)
        if not paths:
            raise gr.Error("Drop one or more files first.")
        paths = stage_uploads(paths)
        discard_superseded_uploads(ws, INGEST.kind)
        docs, choices = documents_table(ws_name)
        yield pd.DataFrame([[p.name, "waiting", "", ""] for p in paths], columns=RESULT_COLUMNS), docs, choices
        job = OPERATIONS.start(ws, INGEST, IngestConfig(paths=[str(p) for p in paths]))
    except BaseException:
        discard_uploads(paths)  # refused before a job took them
        raise
    discard_when_read(ws, job.id)
    yield from _follow_ingest(ws_name, job, progress)


def _follow_ingest(ws_name, job, progress):
    """Each file's row as the ingest job reports it (the newest run of the job: a resumed one reports
    the files stored before it as already there), until the job ends; then the documents table."""
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
    return operations.latest(open_ws(ws_name), INGEST) if ws_name else None


def cancel_ingest(ws_name) -> None:
    """Cancel the newest running ingest: the same cancel as `ragtune jobs cancel` (it stops between files;
    every file stored so far stays)."""
    job = _latest_ingest(ws_name)
    if job is None or job.finished:
        raise BadInputError("No upload is being read.")
    cancel_job(open_ws(ws_name), job.id)
    gr.Info("Cancelling: the upload stops after the current file; the files read so far stay.")


def resume_ingest(ws_name, progress=gr.Progress()):
    """Resume the newest stopped ingest under its id (only the files not stored yet are read) and follow it."""
    job = _latest_ingest(ws_name)
    if job is None or not job.status.resumable:
        raise BadInputError("There is no stopped upload to resume.")
    job = OPERATIONS.resume(open_ws(ws_name), job.id)
    discard_when_read(open_ws(ws_name), job.id)
    yield from _follow_ingest(ws_name, job, progress)


def preview(ws_name, doc_id):
    if not ws_name or not doc_id:
        return "Pick a document to see how it was cut into passages."
    chunks = document_chunks(open_ws(ws_name), doc_id)
    if not chunks:
        return "This document has no passages."
    parts = [f"**{chunks[0].doc}**: **{len(chunks)} passages**" + (" (first 20 shown)" if len(chunks) > 20 else "") + "\n"]
    for c in chunks[:20]:
        where = " / ".join(str(x) for x in (f"page {c.page}" if c.page else None, c.section) if x)
        parts.append(f"---\n**#{c.chunk_id}**" + (f" ({where})" if where else "") + f" - {c.tokens} tokens\n\n{c.text}\n")
    return "\n".join(parts)


def delete(ws_name, doc_id):
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
