"""Builders: metrics, deployments, monitoring, feedback and document upload.

Every route needs the builder password when one is set (``auth.builder_guard``); state-changing
ones also need a same-origin proof, checked before routing (``security.HostGuard``). A key or a
page session never opens a builder route.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ragtune import feedback as feedback_store
from ragtune.errors import BadInputError
from ragtune.workspace import Workspace

from . import deployments, metrics, upload_safety
from .auth import builder_guard, builder_workspace, deploy_state
from .errors import ApiError
from .state import DeployState

log = logging.getLogger("ragtune.deploy")

router = APIRouter(dependencies=[Depends(builder_guard)])


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
                         state: DeployState = Depends(deploy_state)):
    ingest, build_index, upload_limits = state.ingest, state.build_index, state.upload_limits
    if ingest is None:
        raise ApiError(501, "This server was started without the document pipeline; upload from the builder app "
                            "or `ragtune ingest`.", "not_implemented")
    overhead = 64 * 1024 * upload_limits.max_files + 1024 * 1024
    declared = request.headers.get("content-length")
    if not declared or not declared.isdigit():
        raise ApiError(411, "Uploads must declare their size (Content-Length).", "length_required")
    if int(declared) > upload_limits.max_total_mb * upload_safety.MB + overhead:
        raise ApiError(413, f"This upload is over the {upload_limits.max_total_mb:.0f} MB limit per upload; "
                            "nothing was stored.", "upload_refused")
    try:
        form = await request.form(max_files=upload_limits.max_files, max_fields=20)
    except Exception as exc:  # starlette raises its own MultiPartException / HTTPException types
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise ApiError(400, f"Upload refused, nothing was stored: {detail}.", "upload_refused") from None
    try:
        uploads = [f for f in form.getlist("files") if hasattr(f, "filename")]
        files = []
        for f in uploads:
            data = await run_in_threadpool(upload_safety.read_limited, f.file, upload_limits.max_file_bytes,
                                           f.filename or "file")
            files.append((f.filename or "", data))
    except BadInputError as exc:
        raise ApiError(413, f"Upload refused, nothing was stored: {exc}", "upload_refused") from None
    finally:
        await form.close()
    try:
        checked = await run_in_threadpool(upload_safety.check_batch, files, upload_limits)
    except BadInputError as exc:
        log.info("upload refused ws=%s files=%d", ws.name, len(files))
        raise ApiError(400, str(exc), "upload_refused") from None

    def store() -> dict:
        with tempfile.TemporaryDirectory(prefix="ragtune-upload-") as tmp:
            paths = upload_safety.stage_files(checked, [d for _, d in files], Path(tmp))
            results = ingest(ws, paths)
        rows = [asdict(r) if is_dataclass(r) else dict(r) for r in results]
        index = None
        if build_index is not None and request.query_params.get("index") in ("1", "true", "yes") and \
                any(r.get("status") == "added" for r in rows):
            index = build_index(ws)
        return {"results": rows, "index": index}

    out = await run_in_threadpool(store)
    log.info("upload ws=%s files=%d added=%d", ws.name, len(files),
             sum(r.get("status") == "added" for r in out["results"]))
    return out
