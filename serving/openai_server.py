"""The one app factory of ragtune's OpenAI-compatible servers: ``ragtune serve`` and the deploy server.

An app is a list of ``Surface``: a router and the ``CallerPolicy`` of everything on it. The factory gives
every app the same pieces, so the two servers cannot drift apart again:

- the host guard (``host_guard.HostGuard``): answers only for its host names (loopback by default, plus
  the address it listens on and ``RAGTUNE_ALLOWED_HOSTS``), which stops DNS rebinding; state-changing
  requests to a surface whose policy asks for it must come from this site;
- one set of error handlers (``openai_errors``): every error in OpenAI's shape, one code per cause;
- request bodies read no further than ``max_body_kb`` and validated into a pydantic model (``body_of``);
- security headers on every response, and worker threads enough for many open streams.

Policies (who may call a surface, and what a state-changing request must show):

========================  ==========================================  ==========================
policy                    credential (checked by the routes)          same-site writes
========================  ==========================================  ==========================
``LOOPBACK``              none: ``ragtune serve``, on loopback        Origin / Sec-Fetch-Site
``API_KEY``               ``Authorization: Bearer rtk_...``           no (programs, not pages)
``PAGE_SESSION``          the chat page's signed cookie + its header  (its header, in the route)
``BUILDER``               the builder password (HTTP Basic)           + ``X-Ragtune-Builder: 1``
========================  ==========================================  ==========================
"""

from __future__ import annotations

import enum
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from .host_guard import BUILDER_HEADER, SAME_SITE, HostGuard, SameSiteRule
from .openai_errors import ApiError, create_error_response, install_error_handlers
from .openai_protocol import ErrorCode, parse_body

DEFAULT_MAX_BODY_KB = 256
STREAM_THREADS = 256  # each open stream holds a worker thread while it waits for the model (default: 40)
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store")]

Body = TypeVar("Body", bound=BaseModel)


class CallerPolicy(enum.Enum):
    """Who may call a surface; the routes check the credential, the factory the same-site rule."""

    LOOPBACK = "loopback"
    API_KEY = "api_key"
    PAGE_SESSION = "page_session"
    BUILDER = "builder"

    @property
    def same_site(self) -> SameSiteRule | None:
        """What a state-changing request must show: a server without keys is reachable by any page the
        user visits, so it takes writes only from its own site; builders must also send their header."""
        return {CallerPolicy.LOOPBACK: SAME_SITE, CallerPolicy.BUILDER: SameSiteRule(header=BUILDER_HEADER)}.get(self)


@dataclass(frozen=True)
class Surface:
    policy: CallerPolicy
    router: APIRouter


class SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which gets in the way of streamed answers and disconnects)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def same_site_rules(surfaces: Sequence[Surface]) -> Callable[[str], SameSiteRule | None]:
    """The rule of the surface whose route matches a path (a path no route matches is a 404 anyway)."""
    routes = [(route, s.policy.same_site) for s in surfaces for route in s.router.routes]

    def rule_for(path: str) -> SameSiteRule | None:
        return next((rule for route, rule in routes if route.path_regex.match(path)), None)

    return rule_for


def create_openai_app(surfaces: Sequence[Surface], *, title: str, hosts: set[str],
                      max_body_kb: int = DEFAULT_MAX_BODY_KB, state: dict[str, Any] | None = None,
                      on_startup: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    """A FastAPI app of `surfaces` answering only for `hosts` (a set the caller may extend once it knows
    the address it listens on); `state` goes into ``app.state``; `on_startup` runs before the first request."""

    @asynccontextmanager
    async def lifespan(_app):
        anyio.to_thread.current_default_thread_limiter().total_tokens = STREAM_THREADS
        if on_startup is not None:
            await on_startup()
        yield

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    for name, value in (state or {}).items():
        setattr(app.state, name, value)
    app.state.hosts, app.state.max_body_kb = hosts, max_body_kb
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostGuard, hosts=hosts, refuse=create_error_response, rule_for=same_site_rules(surfaces))
    for surface in surfaces:
        app.include_router(surface.router)
    return app


# ------------------------------------------------------------------ request bodies

async def read_json_body(request: Request, max_body_kb: int) -> Any:
    """The request's decoded JSON, read no further than `max_body_kb` (a declared larger length is refused
    before any of it is read)."""
    cap = max_body_kb * 1024
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"The request body is over {max_body_kb} KB.", ErrorCode.REQUEST_TOO_LARGE)
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_big
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_big
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", ErrorCode.INVALID_JSON) from None
    except RecursionError:  # the parser's recursion limit: it used to escape as a plain-text 500
        raise ApiError(400, "The request body is JSON nested too deeply.", ErrorCode.INVALID_JSON) from None


def body_of(model: type[Body]) -> Callable[[Request], Awaitable[Body]]:
    """A FastAPI dependency: the request body as `model`, read within the app's cap; a bad field is a 400
    naming it (``openai_protocol.validation_error``). FastAPI's own body parameters read the whole body
    first and answer in their own words, so routes declare ``body: Model = Depends(body_of(Model))``."""

    async def dependency(request: Request) -> Body:
        return parse_body(model, await read_json_body(request, request.app.state.max_body_kb))

    dependency.__name__ = f"{model.__name__}_body"
    return dependency
