"""The deployed assistant over HTTP: an end-user chat page, an OpenAI-compatible API, builder routes.

Three kinds of caller, three kinds of permission, never mixed:

- **End users on the chat page** (``/chat/<workspace>``): loading the page issues a signed,
  HttpOnly, SameSite=Strict session cookie bound to that workspace; the page's own routes
  (``/chat/<workspace>/api/chat`` and ``/api/feedback``) accept only that cookie, rate-limited per
  session and per workspace. No key is ever sent to a browser.
- **Programs** (``/v1/chat/completions``, ``/v1/models``, ``/v1/feedback``): ``Authorization:
  Bearer rtk_...``. The key decides the workspace; ``/w/<workspace>/v1/...`` names it explicitly
  and refuses a key of any other workspace. Each key has its own rate limit.
- **Builders** (``/builder/<workspace>/...``: upload documents, deployments, monitoring,
  feedback; and ``/metrics``): HTTP Basic with the builder password when one is set
  (``RAGTUNE_BUILDER_PASSWORD``), wrong guesses limited per address and in total; state-changing
  builder requests also need a same-origin proof, password or not. A key or a page session never opens a builder route.

The app comes from the one factory of ragtune's OpenAI servers (``serving.openai_server``), shared with
``ragtune serve``: the host guard (only the host names it was started for; ``RAGTUNE_ALLOWED_HOSTS`` adds
more), the error handlers, the body reader and the stream encoder. Routes live in ``page_routes``,
``api_routes`` and ``builder_routes``, one ``Surface`` each with its ``CallerPolicy``; who may call them
in ``auth``; the wire format in ``serving.openai_protocol``.

Every answer is served by the workspace's *current* deployment (read per request, so publish
and rollback apply at once), stored with the version, variant and adapter that produced it, and
counted in the metrics. Logs carry ids, sizes and timings only: never a key, a question, an
answer or document text.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from contextvars import ContextVar
from typing import Callable

import anyio.to_thread
from fastapi import FastAPI
from starlette.middleware import Middleware

from ragtune.errors import BadInputError, ServerUnavailableError
from ragtune.net import free_port, port_is_free
from ragtune.workspace import list_workspaces
from serving.host_guard import HostGuard, allowed_hosts
from serving.openai_errors import create_error_response
from serving.openai_server import CallerPolicy, Surface, create_openai_app

from . import api_routes, builder_routes, page_routes, upload_safety
from .auth import PAGE_HEADER, SESSION_COOKIE  # noqa: F401 - re-exported for callers and tests
from .security import LoginThrottle
from .state import SESSION_TTL_S, DeployLimits, DeployState, Workspaces  # noqa: F401

log = logging.getLogger("ragtune.deploy")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SURFACES = (Surface(CallerPolicy.PAGE_SESSION, page_routes.router), Surface(CallerPolicy.API_KEY, api_routes.router),
            Surface(CallerPolicy.BUILDER, builder_routes.router))


def env_builder_password() -> str | None:
    return os.environ.get("RAGTUNE_BUILDER_PASSWORD") or None


_LOGIN_CLIENT: ContextVar[str] = ContextVar("ragtune_login_client", default="builder")


class _ClientAddress:
    """ASGI: remembers the connection's address for ``gradio_auth`` (Gradio passes it only the user
    name and password), so the Gradio login is throttled per address like the deploy server's."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        client = scope.get("client") if scope["type"] == "http" else None
        if not client:
            return await self.app(scope, receive, send)
        token = _LOGIN_CLIENT.set(str(client[0]))
        try:
            await self.app(scope, receive, send)
        finally:
            _LOGIN_CLIENT.reset(token)


def gradio_auth(password: str | None = None, throttle: LoginThrottle | None = None):
    """For the Gradio builder app: ``launch(auth=gradio_auth())`` (None when no password is set).

    Wrong passwords are limited as on the deploy server (``LoginThrottle``: per address, then in total);
    the address comes from ``builder_app_middleware`` (without it every login counts as one address).
    An empty password is not a guess and is not counted.
    """
    password = password or env_builder_password()
    if not password:
        return None
    throttle = throttle or LoginThrottle()

    def check(_user, given) -> bool:
        given = "" if given is None else str(given)
        if not given:
            return False
        client = _LOGIN_CLIENT.get()
        if throttle.wait_s(client) > 0:
            return False
        if hmac.compare_digest(given.encode(), password.encode()):
            throttle.succeeded(client)
            return True
        throttle.failed(client)
        return False

    return check


def builder_app_middleware(host: str, hosts: set[str] | None = None) -> list:
    """FastAPI middleware for the Gradio builder app (``launch(app_kwargs={"middleware": ...})``):
    its known host names only, no state-changing request from another site, and the caller's address
    for the login throttle."""
    return [Middleware(HostGuard, hosts=hosts if hosts is not None else allowed_hosts(host),
                       refuse=create_error_response),
            Middleware(_ClientAddress)]


def _sweep_staging(spaces: Workspaces) -> None:
    """Staging folders of uploads whose job is gone (a crash, a kill) are removed at start."""
    if spaces.single is not None:
        found = [spaces.single]
    else:
        found = []
        for name in list_workspaces(spaces.root):
            try:
                found.append(spaces.get(name))
            except Exception:  # noqa: BLE001 - a workspace that does not open is not ours to clean
                continue
    for ws in found:
        try:
            removed = upload_safety.sweep_staging(ws)
        except OSError:
            continue
        if removed:
            log.info("removed %d stale upload staging folder(s) in %s", len(removed), ws.name)


def build_deploy_app(target, engine, *, limits: DeployLimits | None = None,
                     upload_limits: upload_safety.UploadLimits | None = None,
                     builder_password: str | None = None, start_ingest: Callable | None = None,
                     assistant_factory: Callable | None = None,
                     hosts: set[str] | None = None) -> FastAPI:
    """The deploy server for one workspace (a Workspace) or for every workspace under a folder.

    `engine` answers for all of them (one base model; adapters loaded by name). `start_ingest(ws, staged,
    paths, limits, index) -> Job` starts the ingest job of the builder upload route for the files it staged
    (``retrieval.service.upload_pipeline``, passed in by the caller so serving does not depend on retrieval);
    without it that route answers 501. Staging folders a crash left are removed when the server starts.
    `hosts`: the host names to answer for (default: loopback names and $RAGTUNE_ALLOWED_HOSTS;
    ``DeployServer`` adds the address it binds).
    """
    state = DeployState(spaces=Workspaces(target), engine=engine, limits=limits or DeployLimits(),
                        upload_limits=upload_limits or upload_safety.UploadLimits(),
                        password=builder_password if builder_password is not None else env_builder_password(),
                        hosts=hosts if hosts is not None else allowed_hosts(),
                        assistant_factory=assistant_factory, start_ingest=start_ingest)

    async def sweep_staging() -> None:
        if state.start_ingest is not None:
            await anyio.to_thread.run_sync(_sweep_staging, state.spaces)

    return create_openai_app(SURFACES, title="ragtune deployed assistant", hosts=state.hosts,
                             max_body_kb=state.limits.max_body_kb, on_startup=sweep_staging,
                             state={"deploy": state, "metrics": state.metrics, "limiter": state.limiter,
                                    "limits": state.limits, "builder_protected": bool(state.password)})


# ------------------------------------------------------------------ running it

class DeployServer:
    """Run a deploy app with uvicorn in a background thread (the CLI, the builder app, tests, benchmarks).

    `port` 0 picks a free one; with `fallback` a taken port falls back to a free one too.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 fallback: bool = False):
        import uvicorn

        if host not in LOOPBACK and not getattr(app.state, "builder_protected", False):
            raise BadInputError("Listening beyond this machine needs RAGTUNE_BUILDER_PASSWORD set (builder routes "
                                "would be open otherwise).")
        self.host = host
        if not port or (fallback and not port_is_free(host, port)):
            port = free_port(host)
        self.port = port
        hosts = getattr(app.state, "hosts", None)
        if hosts is not None:
            hosts |= allowed_hosts(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                                    access_log=False, timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="ragtune-deploy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self.server.started

    def start(self, timeout: float = 30) -> "DeployServer":
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise ServerUnavailableError(f"The deploy server did not start on {self.url}.")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
