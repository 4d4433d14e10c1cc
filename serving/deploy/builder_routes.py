"""Builders (policy ``BUILDER``): metrics, deployments, monitoring, feedback, document upload (an ingest job) and its jobs.

Every route needs the builder password when one is set (``auth.builder_guard``); state-changing
ones also need a same-origin proof, checked before routing (``serving.host_guard.HostGuard``). A key or a
page session never opens a builder route.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ragtune import feedback as feedback_store
from ragtune.errors import BadInputError, JobError, RagtuneError
from ragtune.job_events import JobProgress
from ragtune.jobs import get_job
from ragtune.workspace import Workspace
from serving.openai_errors import ApiError
from serving.openai_protocol import ErrorCode, JobView, UploadAccepted

from . import deployments, metrics, upload_safety
from .auth import builder_guard, builder_workspace, deploy_state
from .state import DeployState

log = logging.getLogger("ragtune.deploy")

router = APIRouter(dependencies=[Depends(builder_guard)])
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@router.get("/metrics")
async def prometheus(state: DeployState = Depends(deploy_state)):
    return PlainTextResponse(state.metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get("/builder/{workspace}/deployments")
async def builder_deployments(ws: Workspace = Depends(builder_workspace)):
    return {"current": (d.to_dict() if (d := deployments.current(ws)) else None),
            "history": [x.to_dict() for x in deployments.history(ws)],
            "chat_url": f"/chat/{ws.name}"}


@router.get("/builder/{workspace}/monitoring")
async def builder_monitoring(ws: Workspace = Depends(builder_workspace)):
    return await run_in_threadpool(metrics.summary, ws)


@router.get("/builder/{workspace}/feedback")
async def builder_feedback(ws: Workspace = Depends(builder_workspace)):
    return {"feedback": await run_in_threadpool(feedback_store.list_feedback, ws)}


@router.post("/builder/{workspace}/documents")
async def builder_upload(request: Request, ws: Workspace = Depends(builder_workspace),
                         state: DeployState = Depends(deploy_state),
                         index: Annotated[bool, Query(description="rebuild the index once stored")] = False):
    """Check the files (names, sizes, counts, archive and PDF bombs: a 400 or 413 at once), stage them in the
    workspace and start the ingest job that parses and stores them; answers 202 with the job to follow.
    Nothing is parsed here: a slow or hostile file holds the job's parse worker, never this server."""
    start_ingest, upload_limits = state.start_ingest, state.upload_limits
    if start_ingest is None:
        raise ApiError(501, "This server was started without the document pipeline; upload from the builder app "
                            "or `ragtune ingest`.", ErrorCode.NOT_IMPLEMENTED)
    overhead = 64 * 1024 * upload_limits.max_files + 1024 * 1024
    declared = request.headers.get("content-length")
    if not declared or not declared.isdigit():
        raise ApiError(411, "Uploads must declare their size (Content-Length).", ErrorCode.LENGTH_REQUIRED)
    if int(declared) > upload_limits.max_total_mb * upload_safety.MB + overhead:
        raise ApiError(413, f"This upload is over the {upload_limits.max_total_mb:.0f} MB limit per upload; "
                            "nothing was stored.", ErrorCode.UPLOAD_REFUSED)
    try:
        form = await request.form(max_files=upload_limits.max_files, max_fields=20)
    except Exception as exc:  # starlette raises its own MultiPartException / HTTPException types
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise ApiError(400, f"Upload refused, nothing was stored: {detail}.", ErrorCode.UPLOAD_REFUSED) from None
    try:
        uploads = [f for f in form.getlist("files") if hasattr(f, "filename")]
        files = []
        for f in uploads:
            data = await run_in_threadpool(upload_safety.read_limited, f.file, upload_limits.max_file_bytes,
                                           f.filename or "file")
            files.append((f.filename or "", data))
    except BadInputError as exc:
        raise ApiError(413, f"Upload refused, nothing was stored: {exc}", ErrorCode.UPLOAD_REFUSED) from None
    finally:
        await form.close()
    try:
        checked = await run_in_threadpool(upload_safety.check_batch, files, upload_limits)
    except BadInputError as exc:
        log.info("upload refused ws=%s files=%d", ws.name, len(files))
        raise ApiError(400, str(exc), ErrorCode.UPLOAD_REFUSED) from None

    def stage_and_start():
        upload_safety.sweep_staging(ws)  # what a crash left behind
        staged = upload_safety.new_staging(ws)
        try:
            paths = upload_safety.stage_files(checked, [d for _, d in files], staged)
            return start_ingest(ws, staged, paths, upload_limits, index)
        except BaseException:
            upload_safety.remove_staging(ws, staged)
            raise

    try:
        job = await run_in_threadpool(stage_and_start)
    except RagtuneError as exc:
        raise ApiError(503, f"The upload was not started, nothing was stored: {exc}", ErrorCode.NOT_STARTED) from None
    log.info("upload ws=%s files=%d job=%s", ws.name, len(files), job.id)
    accepted = UploadAccepted(job=job.id, status=job.status, follow=f"/builder/{ws.name}/jobs/{job.id}",
                              files=[c.safe_name for c in checked],
                              index="after the files are stored" if index else None)
    return JSONResponse(status_code=202, content=accepted.dump())


@router.get("/builder/{workspace}/jobs/{job_id}")
async def builder_job(job_id: str, ws: Workspace = Depends(builder_workspace)):
    """A job of the workspace (an upload's ingest job, its index job, any other): status, done/total, rate, ETA,
    result (an upload's: ``{"results": [one per file], "index": the index job or why it did not start}``).
    Read from the workspace's job folder, so it is found again after a reload or a server restart."""
    if not JOB_ID.fullmatch(job_id):
        raise ApiError(404, f"No job '{job_id}' in workspace '{ws.name}'.", ErrorCode.NOT_FOUND)

    def read() -> dict:
        job = get_job(ws, job_id)
        progress = JobProgress.of_job(job)
        return JobView(id=job.id, kind=job.kind, status=job.status, error=job.error, result=job.result,
                       done=progress.done, total=progress.total, label=progress.label, rate=progress.rate,
                       eta_s=progress.eta_s).dump()

    try:
        return await run_in_threadpool(read)
    except JobError as exc:
        raise ApiError(404, str(exc), ErrorCode.NOT_FOUND) from None
