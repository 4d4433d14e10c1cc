"""Server-sent answers that stop when their client goes away.

Starlette drops a blocking iterator on disconnect without closing it, and it notices the
disconnect only when the next chunk is ready, so an abandoned answer kept the model busy (and
queued answers kept waiting for it). Here a task listens for the disconnect and fires the
answer's ``CancelToken``, which stops the engine, also while the request still waits for the model;
the iterator is closed as soon as it is left.
"""

from __future__ import annotations

import asyncio
from typing import Iterator

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import StreamingResponse

from .engine import CancelToken

SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-store"}


def watch_disconnect(request: Request, cancel: CancelToken) -> asyncio.Task:
    """Start listening (after the body was read) for the client to go away; cancel the task when done."""

    async def listen():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.cancel()

    return asyncio.ensure_future(listen())


def sse_response(lines: Iterator[str], cancel: CancelToken, watcher: asyncio.Task) -> StreamingResponse:
    return StreamingResponse(_until_done(lines, cancel, watcher), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def _until_done(lines: Iterator[str], cancel: CancelToken, watcher: asyncio.Task):
    done = object()
    finished = False
    try:
        while True:
            line = await anyio.to_thread.run_sync(next, lines, done)
            if line is done:
                finished = True
                break
            yield line
    finally:
        watcher.cancel()
        if not finished:
            cancel.cancel()
        close = getattr(lines, "close", None)
        if close is not None:
            close()
