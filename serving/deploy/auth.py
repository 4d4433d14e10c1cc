"""FastAPI dependencies for the three kinds of caller: API key, chat-page session, builder.

Each resolves to a ``Caller`` (the workspace and a client id for logs and limits) or raises an
``ApiError``; routes declare which one they need and never mix them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ragtune.workspace import Workspace
from serving.openai_errors import ApiError
from serving.openai_protocol import ErrorCode

from . import keys
from .state import DeployState

PAGE_HEADER = "x-ragtune-page"
SESSION_COOKIE = "rt_page"


@dataclass
class Caller:
    ws: Workspace
    client: str  # "key:<id>" or "page:<session id>"
    key: keys.KeyInfo | None = None
    session: str | None = None


def deploy_state(request: Request) -> DeployState:
    return request.app.state.deploy


def rate_check(state: DeployState, bucket: str, per_min: int, ws_name: str, what: str) -> None:
    decision = state.limiter.check(bucket, per_min)
    if not decision.allowed:
        state.metrics.observe_refused(ws_name, "rate_limited")
        wait = max(1, int(decision.retry_after_s + 0.999))
        raise ApiError(429, f"Too many requests for this {what} (limit {per_min} per minute); retry in {wait} s.",
                       ErrorCode.RATE_LIMIT_EXCEEDED, {"Retry-After": str(wait)})


# ------------------------------------------------------------------ API keys

def _key_caller(state: DeployState, request: Request, workspace: str | None) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        state.metrics.observe_refused(workspace or "", "no_key")
        raise ApiError(401, "An API key is required: send 'Authorization: Bearer <key>'. "
                            "Create one with `ragtune keys create`.", ErrorCode.INVALID_API_KEY,
                       {"WWW-Authenticate": "Bearer"})
    key_id = keys.key_id_of(token)
    ws = state.spaces.owner_of(key_id) if key_id else None
    info = keys.verify_key(ws, token) if ws is not None else None
    if info is None:
        state.metrics.observe_refused(workspace or "", "bad_key")
        raise ApiError(401, "This API key is not valid (unknown or revoked).", ErrorCode.INVALID_API_KEY,
                       {"WWW-Authenticate": "Bearer"})
    if workspace is not None and ws.name != workspace:
        state.metrics.observe_refused(workspace, "wrong_workspace")
        raise ApiError(403, "This API key belongs to another assistant.", ErrorCode.PERMISSION_DENIED)
    rate_check(state, f"key:{info.key_id}", info.rate_limit_per_min, ws.name, "API key")
    return Caller(ws, f"key:{info.key_id}", key=info)


async def api_caller(request: Request, state: DeployState = Depends(deploy_state)) -> Caller:
    """``Authorization: Bearer <key>``: the key decides the workspace."""
    return await run_in_threadpool(_key_caller, state, request, None)


async def api_caller_in(workspace: str, request: Request, state: DeployState = Depends(deploy_state)) -> Caller:
    """``/w/<workspace>/v1/...``: a key of that workspace only."""
    return await run_in_threadpool(_key_caller, state, request, workspace)


# ------------------------------------------------------------------ chat page sessions

def page_session(workspace: str, request: Request, state: DeployState = Depends(deploy_state)) -> Caller:
    """The signed cookie the chat page was given, for this workspace, sent by the page's own script."""
    ws = state.spaces.get(workspace)
    if request.headers.get(PAGE_HEADER) != "1":
        raise ApiError(403, "This route is for the chat page only; programs use /v1/chat/completions with a key.",
                       ErrorCode.PERMISSION_DENIED)
    payload = state.signer.unsign(request.cookies.get(SESSION_COOKIE, ""))
    if payload is None or payload.get("ws") != ws.name or not isinstance(payload.get("sid"), str):
        state.metrics.observe_refused(ws.name, "no_session")
        raise ApiError(401, "Your chat session has expired; reload the page.", ErrorCode.SESSION_EXPIRED)
    return Caller(ws, f"page:{payload['sid']}", session=payload["sid"])


# ------------------------------------------------------------------ builders

def builder_guard(request: Request, state: DeployState = Depends(deploy_state)) -> None:
    """HTTP Basic with the builder password when one is set; wrong guesses are limited per address and
    in total (``security.LoginThrottle``). A request with no password is not a guess: 401, not counted
    (a browser sends one before it asks, and anyone could otherwise lock the owner out).

    (The same-origin proof for state-changing builder requests is checked before routing, by
    ``serving.host_guard.HostGuard``, so it holds with or without a password.)
    """
    if not state.password:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = ""
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(value).decode("utf-8").partition(":")[2]
        except (ValueError, binascii.Error):
            given = ""
    if not given:
        raise ApiError(401, "Builder routes need the builder password.", ErrorCode.BUILDER_AUTH_REQUIRED,
                       {"WWW-Authenticate": 'Basic realm="ragtune builder"'})
    client = request.client.host if request.client else "?"
    wait = state.throttle.wait_s(client)
    if wait > 0:
        retry = max(1, int(wait + 0.999))
        raise ApiError(429, f"Too many wrong builder passwords; try again in {retry} s.", ErrorCode.LOGIN_THROTTLED,
                       {"Retry-After": str(retry)})
    if not hmac.compare_digest(given.encode(), state.password.encode()):
        state.throttle.failed(client)
        raise ApiError(401, "Builder routes need the builder password.", ErrorCode.BUILDER_AUTH_REQUIRED,
                       {"WWW-Authenticate": 'Basic realm="ragtune builder"'})
    state.throttle.succeeded(client)


def builder_workspace(workspace: str, state: DeployState = Depends(deploy_state)) -> Workspace:
    return state.spaces.get(workspace)
