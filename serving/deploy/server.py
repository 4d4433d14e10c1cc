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
  (``RAGTUNE_BUILDER_PASSWORD``). A key or a page session never opens a builder route.

Every answer is served by the workspace's *current* deployment (read per request, so publish
and rollback apply at once), stored with the version, variant and adapter that produced it, and
counted in the metrics. Logs carry ids, sizes and timings only: never a key, a question, an
answer or document text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragtune import feedback as feedback_store
from ragtune.errors import BadInputError, RagtuneError, ServerUnavailableError, WorkspaceError
from ragtune.workspace import META_FILE, NAME_RE, Workspace, list_workspaces

from . import deployments, keys, metrics, page, upload_safety
from .ratelimit import RateLimiter

log = logging.getLogger("ragtune.deploy")

SESSION_COOKIE = "rt_page"
SESSION_TTL_S = 12 * 3600
PAGE_HEADER = "x-ragtune-page"


@dataclass
class DeployLimits:
    """Bounds on what one request may ask of the model (prompt and output length, body size)."""
    max_body_kb: int = 256
    max_messages: int = 40
    max_message_chars: int = 4000
    max_prompt_chars: int = 16000
    max_tokens: int = 512          # a request asking for more is capped here
    default_max_tokens: int = 256
    page_rate_per_min: int = 20    # per browser session
    page_workspace_rate_per_min: int = 240  # all sessions of one workspace's page together
    feedback_rate_per_min: int = 60


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


def env_builder_password() -> str | None:
    return os.environ.get("RAGTUNE_BUILDER_PASSWORD") or None


def gradio_auth(password: str | None = None):
    """For the Gradio builder app: ``launch(auth=gradio_auth())`` (None when no password is set)."""
    password = password or env_builder_password()
    if not password:
        return None
    return lambda _user, given: hmac.compare_digest(str(given).encode(), password.encode())


# ------------------------------------------------------------------ workspaces

class _Workspaces:
    """The workspaces one server answers for: a single one, or every workspace under a root folder."""

    def __init__(self, target):
        self._lock = threading.Lock()
        self._open: dict[str, Workspace] = {}
        self._key_owner: dict[str, str] = {}
        if isinstance(target, Workspace):
            self.single: Workspace | None = target
            self.root = None
            self._open[target.name] = target
        else:
            self.single = None
            self.root = Path(target)

    def get(self, name: str) -> Workspace:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(404, "No such assistant.", "not_found")
        with self._lock:
            ws = self._open.get(name)
            if ws is not None and not (ws.root / META_FILE).exists():  # deleted or renamed since
                del self._open[name]
                ws = None
        if ws is not None:
            return ws
        if self.single is not None:
            raise ApiError(404, "No such assistant.", "not_found")
        try:
            ws = Workspace.open(name, root=self.root)
        except WorkspaceError:
            raise ApiError(404, "No such assistant.", "not_found") from None
        if ws.root.parent != self.root.resolve():
            raise ApiError(404, "No such assistant.", "not_found")
        with self._lock:
            self._open[name] = ws
        return ws

    def owner_of(self, key_id: str) -> Workspace | None:
        """The workspace holding key `key_id` (ids are random, so at most one does)."""
        if self.single is not None:
            return self.single
        with self._lock:
            known = self._key_owner.get(key_id)
        if known:
            return self.get(known)
        for name in list_workspaces(self.root):
            ws = self.get(name)
            if any(k.key_id == key_id for k in keys.list_keys(ws)):
                with self._lock:
                    self._key_owner[key_id] = name
                return ws
        return None


# ------------------------------------------------------------------ the app

def build_deploy_app(target, engine, *, limits: DeployLimits | None = None,
                     upload_limits: upload_safety.UploadLimits | None = None,
                     builder_password: str | None = None, ingest: Callable | None = None,
                     build_index: Callable | None = None, assistant_factory: Callable | None = None) -> FastAPI:
    """The deploy server for one workspace (a Workspace) or for every workspace under a folder.

    `engine` answers for all of them (one base model; adapters loaded by name). `ingest(ws, paths)`
    and `build_index(ws)` are the document pipeline for the builder upload route (passed in by the
    caller so serving does not depend on retrieval); without them that route answers 501.
    """
    limits = limits or DeployLimits()
    upload_limits = upload_limits or upload_safety.UploadLimits()
    password = builder_password if builder_password is not None else env_builder_password()
    spaces = _Workspaces(target)
    limiter = RateLimiter()
    stats = metrics.DeployMetrics()
    session_secret = secrets.token_bytes(32)
    assistants: dict[str, object] = {}
    assistants_lock = threading.Lock()

    def make_assistant(ws):
        if assistant_factory is not None:
            return assistant_factory(ws, engine)
        from serving.variants import Assistant

        return Assistant(ws, engine)

    def assistant_for(ws):
        with assistants_lock:
            if ws.name not in assistants:
                assistants[ws.name] = make_assistant(ws)
            return assistants[ws.name]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        import anyio.to_thread

        # Each streaming answer holds a worker thread while it waits for the model; the default
        # 40 would make the 41st concurrent client wait for a thread, not for the model.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        yield

    app = FastAPI(title="ragtune deployed assistant", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.metrics = stats
    app.state.limiter = limiter
    app.state.limits = limits
    app.state.builder_protected = bool(password)

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(BadInputError)
    async def _bad_input(_request, exc: BadInputError):
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(RagtuneError)
    async def _ragtune_error(_request, exc: RagtuneError):
        return _error(503 if isinstance(exc, ServerUnavailableError) else 400, str(exc), "service_error")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -------------------------------------------------------------- helpers
    async def read_json_body(request: Request) -> dict:
        cap = limits.max_body_kb * 1024
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise ApiError(413, f"The request body is over {limits.max_body_kb} KB.", "invalid_request_error")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise ApiError(413, f"The request body is over {limits.max_body_kb} KB.", "invalid_request_error")
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "The request body is not valid JSON.", "invalid_request_error") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The request body must be a JSON object.", "invalid_request_error")
        return data

    def rate_check(bucket: str, per_min: int, ws_name: str, what: str) -> None:
        decision = limiter.check(bucket, per_min)
        if not decision.allowed:
            stats.observe_refused(ws_name, "rate_limited")
            wait = max(1, int(decision.retry_after_s + 0.999))
            raise ApiError(429, f"Too many requests for this {what} (limit {per_min} per minute); retry in {wait} s.",
                           "rate_limit_exceeded", {"Retry-After": str(wait)})

    def key_auth(request: Request, workspace: str | None = None) -> tuple[Workspace, keys.KeyInfo]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            stats.observe_refused(workspace or "", "no_key")
            raise ApiError(401, "An API key is required: send 'Authorization: Bearer <key>'. "
                                "Create one with `ragtune keys create`.", "invalid_api_key",
                           {"WWW-Authenticate": "Bearer"})
        key_id = keys.key_id_of(token)
        ws = spaces.owner_of(key_id) if key_id else None
        info = keys.verify_key(ws, token) if ws is not None else None
        if info is None:
            stats.observe_refused(workspace or "", "bad_key")
            raise ApiError(401, "This API key is not valid (unknown or revoked).", "invalid_api_key",
                           {"WWW-Authenticate": "Bearer"})
        if workspace is not None and ws.name != workspace:
            stats.observe_refused(workspace, "wrong_workspace")
            raise ApiError(403, "This API key belongs to another assistant.", "permission_denied")
        rate_check(f"key:{info.key_id}", info.rate_limit_per_min, ws.name, "API key")
        return ws, info

    def sign(payload: dict) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(session_secret, raw.encode(), hashlib.sha256).hexdigest()
        return f"{raw}.{mac}"

    def unsign(token: str) -> dict | None:
        raw, _, mac = (token or "").partition(".")
        if not raw or not hmac.compare_digest(hmac.new(session_secret, raw.encode(), hashlib.sha256).hexdigest(), mac):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) and payload.get("exp", 0) > time.time() else None

    def session_auth(request: Request, workspace: str) -> str:
        if request.headers.get(PAGE_HEADER) != "1":
            raise ApiError(403, "This route is for the chat page only; programs use /v1/chat/completions with a key.",
                           "permission_denied")
        payload = unsign(request.cookies.get(SESSION_COOKIE, ""))
        if payload is None or payload.get("ws") != workspace:
            stats.observe_refused(workspace, "no_session")
            raise ApiError(401, "Your chat session has expired; reload the page.", "session_expired")
        return payload["sid"]

    def builder_auth(request: Request) -> None:
        if not password:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        given = ""
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value).decode("utf-8").partition(":")[2]
            except ValueError:
                given = ""
        if not given or not hmac.compare_digest(given.encode(), password.encode()):
            raise ApiError(401, "Builder routes need the builder password.", "builder_auth_required",
                           {"WWW-Authenticate": 'Basic realm="ragtune builder"'})

    def live_deployment(ws) -> deployments.Deployment:
        d = deployments.current(ws)
        if d is None:
            raise ApiError(503, "This assistant is not published right now.", "not_published")
        return d

    def check_chat(body: dict) -> tuple[list[dict], int]:
        from serving.engine import check_messages

        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "Send at least one message in 'messages'.", "invalid_request_error")
        if len(messages) > limits.max_messages:
            raise ApiError(400, f"At most {limits.max_messages} messages per request; start a new conversation.",
                           "invalid_request_error")
        messages = check_messages(messages)
        for m in messages:
            if len(m["content"]) > limits.max_message_chars:
                raise ApiError(400, f"A message is {len(m['content'])} characters; the limit is "
                                    f"{limits.max_message_chars}.", "prompt_too_long")
        total = sum(len(m["content"]) for m in messages)
        if total > limits.max_prompt_chars:
            raise ApiError(400, f"The conversation is {total} characters; the limit is {limits.max_prompt_chars}. "
                                "Start a new conversation.", "prompt_too_long")
        if not messages[-1]["content"].strip():
            raise ApiError(400, "The question is empty.", "invalid_request_error")
        requested = body.get("max_tokens") or body.get("max_completion_tokens") or limits.default_max_tokens
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ApiError(400, "max_tokens must be a positive whole number.", "invalid_request_error")
        return messages, min(requested, limits.max_tokens)

    def sampling(body: dict, max_tokens: int):
        from serving.engine import SamplingOptions

        try:
            return SamplingOptions(max_tokens=max_tokens, temperature=float(body.get("temperature") or 0.0),
                                   top_p=float(body.get("top_p") or 1.0), seed=body.get("seed"))
        except (TypeError, ValueError):
            raise ApiError(400, "temperature and top_p must be numbers.", "invalid_request_error") from None

    # -------------------------------------------------------------- answering
    def answer_events(ws, d: deployments.Deployment, messages: list[dict], max_tokens_opts, *, channel: str,
                      client: str, conversation_id: str | None) -> Iterator[dict]:
        """Chunks of one answer as dicts (OpenAI chat.completion.chunk shape), then a final one.

        Stores the turn and counts it when the answer completes; an error ends the stream with
        an error chunk (and is counted) instead of breaking the connection.
        """
        assistant = assistant_for(ws)
        question = messages[-1]["content"]
        history = [m for m in messages[:-1] if m["role"] in ("user", "assistant")]
        model = d.model
        started = time.perf_counter()
        ttft = None
        parts: list[str] = []
        status = "cancelled"
        error_reason = None
        stats.in_flight.labels(ws.name).inc()
        try:
            final = None
            for item in assistant.stream(question, variant=d.variant, adapter=d.adapter, history=history,
                                         options=max_tokens_opts):
                if isinstance(item, str):
                    if not item:
                        continue
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(item)
                    yield {"delta": item}
                else:
                    final = item
            latency = time.perf_counter() - started
            text = getattr(final, "text", None) or "".join(parts)
            prompt_tokens = int(getattr(final, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(final, "completion_tokens", 0) or 0)
            citations = list(getattr(final, "citations", None) or [])
            turn = feedback_store.record_conversation(
                ws, question, text, variant=d.variant, adapter=d.adapter, deployment_version=d.version,
                conversation_id=conversation_id, channel=channel, client=client, history=history,
                citations=citations, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                latency_s=latency)
            status = "ok"
            stats.observe_answer(ws.name, model, latency, ttft, prompt_tokens, completion_tokens)
            metrics.record_request(ws, model=model, channel=channel, status="ok", deployment_version=d.version,
                                   latency_s=latency, ttft_s=ttft, prompt_tokens=prompt_tokens,
                                   completion_tokens=completion_tokens)
            log.info("answered ws=%s v%s model=%s channel=%s tokens=%d+%d latency=%.3fs", ws.name, d.version,
                     model, channel, prompt_tokens, completion_tokens, latency)
            yield {"final": True, "text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "finish_reason": getattr(final, "finish_reason", None) or "stop",
                   "ragtune": {**turn, "deployment_version": d.version, "variant": d.variant, "adapter": d.adapter,
                               "citations": citations, "latency_s": latency, "ttft_s": ttft}}
        except RagtuneError as exc:
            status, error_reason = "error", type(exc).__name__
            yield {"error": str(exc), "status": 503 if isinstance(exc, ServerUnavailableError) else 400}
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - a model failure must not take the server down
            status, error_reason = "error", type(exc).__name__
            log.exception("answer failed ws=%s v%s model=%s (%s)", ws.name, d.version, model, type(exc).__name__)
            yield {"error": "The assistant failed to answer; the error was logged on the server.", "status": 500}
        finally:
            stats.in_flight.labels(ws.name).dec()
            if status == "cancelled":  # the client went away: not the service's failure
                stats.requests.labels(ws.name, model, "cancelled").inc()
            elif status != "ok":
                stats.observe_error(ws.name, model, error_reason)
            if status != "ok":
                try:
                    metrics.record_request(ws, model=model, channel=channel, status=status,
                                           deployment_version=d.version,
                                           latency_s=time.perf_counter() - started, error=error_reason)
                except Exception:  # noqa: BLE001 - the log write must not mask the original error
                    log.warning("could not record a failed request for ws=%s", ws.name)

    def chat_response(ws, d, body: dict, *, channel: str, client: str):
        messages, max_tokens = check_chat(body)
        options = sampling(body, max_tokens)
        conversation_id = body.get("conversation_id")
        if conversation_id is not None and (not isinstance(conversation_id, str) or len(conversation_id) > 64):
            raise ApiError(400, "conversation_id must be a short string.", "invalid_request_error")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model_name = f"{ws.name}/{d.model}"
        events = answer_events(ws, d, messages, options, channel=channel, client=client,
                               conversation_id=conversation_id)

        def chunk(delta: dict, finish=None, **extra) -> str:
            obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(obj, ensure_ascii=False, default=str)}\n\n"

        try:
            first = next(events)
        except StopIteration:
            first = {"error": "The assistant returned nothing.", "status": 500}
        if "error" in first:  # failed before any text: a real HTTP error, not a broken stream
            events.close()
            return _error(first["status"], first["error"], "service_error")

        if body.get("stream"):
            def sse() -> Iterator[str]:
                yield chunk({"role": "assistant", "content": ""})
                try:
                    for event in _chain(first, events):
                        if "delta" in event:
                            yield chunk({"content": event["delta"]})
                        elif "error" in event:
                            err = {"error": {"message": event["error"], "type": "service_error",
                                             "code": event["status"]}}
                            yield f"data: {json.dumps(err)}\n\n"
                        else:
                            usage = {"prompt_tokens": event["prompt_tokens"],
                                     "completion_tokens": event["completion_tokens"],
                                     "total_tokens": event["prompt_tokens"] + event["completion_tokens"]}
                            yield chunk({}, event["finish_reason"], usage=usage, ragtune=event["ragtune"])
                finally:
                    events.close()
                yield "data: [DONE]\n\n"

            return StreamingResponse(_closing_stream(sse()), media_type="text/event-stream",
                                     headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"})

        final = None
        try:
            for event in _chain(first, events):
                if "error" in event:
                    return _error(event["status"], event["error"], "service_error")
                if event.get("final"):
                    final = event
        finally:
            events.close()
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": final["text"]},
                         "finish_reason": final["finish_reason"]}],
            "usage": {"prompt_tokens": final["prompt_tokens"], "completion_tokens": final["completion_tokens"],
                      "total_tokens": final["prompt_tokens"] + final["completion_tokens"]},
            "ragtune": final["ragtune"],
        })

    async def chat(request: Request, ws, client: str, channel: str):
        body = await read_json_body(request)
        d = await run_in_threadpool(live_deployment, ws)
        return await run_in_threadpool(chat_response, ws, d, body, channel=channel, client=client)

    async def give_feedback(request: Request, ws, client: str):
        body = await read_json_body(request)
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise ApiError(400, "Feedback needs the 'message_id' of the answer (returned in the 'ragtune' field).",
                           "invalid_request_error")
        rating = body.get("rating")
        if isinstance(rating, bool):
            rating = "up" if rating else "down"
        try:
            row = await run_in_threadpool(feedback_store.record_feedback, ws, message_id, rating,
                                          body.get("correction"), body.get("comment"), client=client)
        except BadInputError as exc:
            raise ApiError(404 if "No answer" in str(exc) else 400, str(exc), "invalid_request_error") from None
        model = f"{row['variant']}:{row['adapter']}" if row["adapter"] else row["variant"]
        stats.observe_feedback(ws.name, model, row["rating"])
        log.info("feedback ws=%s v%s rating=%s correction=%s", ws.name, row["deployment_version"], row["rating"],
                 bool(row["correction"]))
        return {"ok": True, "message_id": row["message_id"], "rating": row["rating"],
                "correction": row["correction"] is not None}

    # -------------------------------------------------------------- end-user routes
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/static/chat.js")
    async def chat_js():
        return Response(page.JS, media_type="application/javascript")

    @app.get("/static/chat.css")
    async def chat_css():
        return Response(page.CSS, media_type="text/css")

    @app.get("/chat/{workspace}", response_class=HTMLResponse)
    async def chat_page(workspace: str):
        ws = spaces.get(workspace)
        if deployments.current(ws) is None:
            return HTMLResponse("<!doctype html><title>Not available</title><p>This assistant is not published.</p>",
                                status_code=404)
        settings = ws.get_setting("deploy", {}) or {}
        html = page.render_page(ws.name, settings.get("title") or f"{ws.name} assistant",
                                settings.get("welcome") or "Hello! Ask me a question about our documents.")
        response = HTMLResponse(html, headers={"Content-Security-Policy": page.CSP, "X-Frame-Options": "DENY"})
        token = sign({"ws": ws.name, "sid": secrets.token_hex(12), "exp": time.time() + SESSION_TTL_S})
        response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, path=f"/chat/{ws.name}", httponly=True,
                            samesite="strict")
        return response

    @app.post("/chat/{workspace}/api/chat")
    async def page_chat(workspace: str, request: Request):
        ws = spaces.get(workspace)
        sid = session_auth(request, ws.name)
        rate_check(f"page:{ws.name}", limits.page_workspace_rate_per_min, ws.name, "assistant's page")
        rate_check(f"session:{sid}", limits.page_rate_per_min, ws.name, "chat session")
        return await chat(request, ws, client=f"page:{sid}", channel="page")

    @app.post("/chat/{workspace}/api/feedback")
    async def page_feedback(workspace: str, request: Request):
        ws = spaces.get(workspace)
        sid = session_auth(request, ws.name)
        rate_check(f"feedback:{sid}", limits.feedback_rate_per_min, ws.name, "chat session")
        return await give_feedback(request, ws, client=f"page:{sid}")

    # -------------------------------------------------------------- API routes (keys)
    async def api_models(ws):
        d = deployments.current(ws)
        data = [] if d is None else [{"id": f"{ws.name}/{d.model}", "object": "model", "owned_by": ws.name,
                                      "ragtune": d.to_dict()}]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        ws, info = await run_in_threadpool(key_auth, request)
        return await chat(request, ws, client=f"key:{info.key_id}", channel="api")

    @app.post("/w/{workspace}/v1/chat/completions")
    async def completions_in(workspace: str, request: Request):
        ws, info = await run_in_threadpool(key_auth, request, workspace)
        return await chat(request, ws, client=f"key:{info.key_id}", channel="api")

    @app.get("/v1/models")
    async def models(request: Request):
        ws, _ = await run_in_threadpool(key_auth, request)
        return await api_models(ws)

    @app.get("/w/{workspace}/v1/models")
    async def models_in(workspace: str, request: Request):
        ws, _ = await run_in_threadpool(key_auth, request, workspace)
        return await api_models(ws)

    @app.post("/v1/feedback")
    async def api_feedback(request: Request):
        ws, info = await run_in_threadpool(key_auth, request)
        return await give_feedback(request, ws, client=f"key:{info.key_id}")

    @app.post("/w/{workspace}/v1/feedback")
    async def api_feedback_in(workspace: str, request: Request):
        ws, info = await run_in_threadpool(key_auth, request, workspace)
        return await give_feedback(request, ws, client=f"key:{info.key_id}")

    # -------------------------------------------------------------- builder routes
    @app.get("/metrics")
    async def prometheus(request: Request):
        builder_auth(request)
        return PlainTextResponse(stats.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    @app.get("/builder/{workspace}/deployments")
    async def builder_deployments(workspace: str, request: Request):
        builder_auth(request)
        ws = spaces.get(workspace)
        return {"current": (d.to_dict() if (d := deployments.current(ws)) else None),
                "history": [x.to_dict() for x in deployments.history(ws)],
                "chat_url": f"/chat/{ws.name}"}

    @app.get("/builder/{workspace}/monitoring")
    async def builder_monitoring(workspace: str, request: Request):
        builder_auth(request)
        ws = spaces.get(workspace)
        return await run_in_threadpool(metrics.summary, ws)

    @app.get("/builder/{workspace}/feedback")
    async def builder_feedback(workspace: str, request: Request):
        builder_auth(request)
        ws = spaces.get(workspace)
        return {"feedback": await run_in_threadpool(feedback_store.list_feedback, ws)}

    @app.post("/builder/{workspace}/documents")
    async def builder_upload(workspace: str, request: Request):
        builder_auth(request)
        ws = spaces.get(workspace)
        if ingest is None:
            raise ApiError(501, "This server was started without the document pipeline; upload from the builder app "
                                "or `ragtune ingest`.", "not_implemented")
        overhead = 64 * 1024 * upload_limits.max_files + 1024 * 1024
        declared = request.headers.get("content-length")
        if not declared or not declared.isdigit():
            raise ApiError(411, "Uploads must declare their size (Content-Length).", "invalid_request_error")
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

    return app


# ------------------------------------------------------------------ running it

class DeployServer:
    """Run a deploy app with uvicorn in a background thread (tests, benchmarks, the CLI)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        if host not in ("127.0.0.1", "localhost", "::1") and not getattr(app.state, "builder_protected", False):
            raise BadInputError("Listening beyond this machine needs RAGTUNE_BUILDER_PASSWORD set (builder routes "
                                "would be open otherwise).")
        self.host = host
        self.port = port or _free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                                    access_log=False, timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="ragtune-deploy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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


async def _closing_stream(iterator):
    """Iterate a blocking generator in worker threads, and close it as soon as the client goes away.

    Starlette drops a sync iterator on disconnect without closing it, so an abandoned answer
    would keep the model busy until the generator is garbage-collected. A worker-thread step is
    not abandoned on cancel, so when the cancel arrives the generator is idle and can be closed here.
    """
    import anyio.to_thread

    done = object()
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, iterator, done)
            if item is done:
                break
            yield item
    finally:
        iterator.close()


def _chain(first, rest):
    yield first
    yield from rest


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
