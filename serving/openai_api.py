"""An OpenAI-compatible API over the assistants: `model` names a variant, not a checkpoint.

``model`` is ``base``, ``rag``, ``ft:<adapter>`` or ``ft+rag:<adapter>`` (``ft`` alone means the
newest adapter; the base model's own name means ``base``). Answers carry an extra ``ragtune``
field with the citations, the passages and the timings. Client system messages are ignored: each
variant has its own system prompt (``serving.prompts``). ``chat_completion_response`` is the
reusable core, also used by the deployment server.
"""

from __future__ import annotations

from typing import Iterator

from starlette.requests import Request  # module level: FastAPI reads the endpoint's annotations here

from ragtune import __version__
from ragtune import adapters as adapter_registry
from ragtune.errors import BadInputError, ModelNotFoundError, RagtuneError, ServerUnavailableError

from .engine import SamplingOptions
from .openai_format import DONE_EVENT, CompletionFormat, RequestError, error_event, parse_chat_request, usage
from .openai_format import error_body as openai_error_body
from .variants import Answer, Assistant, format_variant, parse_variant


def parse_request(body: dict, assistant: Assistant) -> dict:
    """Validate an OpenAI chat request; returns what Assistant.answer/stream takes."""
    request = parse_chat_request(body)
    model = (request.model or "").strip()
    if not model:
        raise RequestError("Name the assistant in `model`: base, rag, ft:<adapter> or ft+rag:<adapter>.", "model",
                           "missing_required_parameter")
    if model == assistant.engine.model_name:
        model = "base"
    variant, adapter = parse_variant(model)
    turns = [m for m in _clean(request.messages) if m["role"] != "system"]
    options = request.sampling(request.requested_max_tokens or SamplingOptions.max_tokens)
    return {"question": turns[-1]["content"], "variant": variant, "adapter": adapter, "history": turns[:-1],
            "options": options, "k": request.ragtune.k if request.ragtune else None,
            "stream": request.stream,
            "include_usage": bool(request.stream_options and request.stream_options.include_usage)}


def _clean(messages):
    from .engine import check_messages

    return check_messages(messages)


def _ragtune_field(answer: Answer) -> dict:
    d = answer.to_dict()
    d.pop("text")
    return d


def chat_completion_response(body: dict, assistant: Assistant, cancel=None) -> dict | Iterator[str]:
    """A chat.completion dict, or (``stream: true``) an iterator of SSE lines ending in ``[DONE]``.

    Bad requests (unknown variant or adapter, over-long prompt...) raise RagtuneError before any
    line is produced; a failure mid-stream becomes an ``error`` event, then ``[DONE]``.
    """
    request = parse_request(body, assistant)
    stream, include_usage = request.pop("stream"), request.pop("include_usage")
    if not stream:
        answer = assistant.answer(**request)
        fmt = CompletionFormat(format_variant(answer.variant, answer.adapter))
        return fmt.completion(answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens,
                              ragtune=_ragtune_field(answer))
    items = assistant.stream(**request, cancel=cancel)
    return _sse(items, CompletionFormat(format_variant(request["variant"], request["adapter"])), include_usage)


def _sse(items, fmt: CompletionFormat, include_usage: bool) -> Iterator[str]:
    yield fmt.first_chunk()
    try:
        for item in items:
            if isinstance(item, Answer):
                fmt.model = format_variant(item.variant, item.adapter)
                yield fmt.chunk({}, item.finish_reason or "stop", ragtune=_ragtune_field(item))
                if include_usage:
                    yield fmt.chunk(None, usage=usage(item.prompt_tokens, item.completion_tokens))
            elif item:
                yield fmt.chunk({"content": item})
    except Exception as exc:  # the response has started: report in-band, keep the server up
        status, error = error_body(exc)
        yield error_event(status, error["error"]["message"], error["error"]["code"])
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a client that went away stops the generation
    yield DONE_EVENT


def error_body(exc: Exception) -> tuple[int, dict]:
    """HTTP status and OpenAI-style error object for an exception."""
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None) if isinstance(exc, RequestError) else None
    if isinstance(exc, ServerUnavailableError):
        status, code = 503, "server_unavailable"
    elif isinstance(exc, ModelNotFoundError):
        status, code = 404, "model_not_found"
    elif isinstance(exc, BadInputError):
        status, code = 400, code or "invalid_request"
    elif isinstance(exc, RagtuneError):
        status, code = 500, "ragtune_error"
    else:
        status, code = 500, "internal_error"
    message = str(exc) if isinstance(exc, RagtuneError) else f"Internal error ({type(exc).__name__}: {exc})."
    return status, openai_error_body(status, message, code, param)


def list_models(ws, engine) -> list[str]:
    names = ["base", "rag"]
    try:
        for info in adapter_registry.list_adapters(ws):
            if not info.is_full_model:
                names += [f"ft:{info.name}", f"ft+rag:{info.name}"]
    except RagtuneError:
        pass
    return names


def build_app(ws, engine, assistant: Assistant | None = None, *, hosts: set[str] | None = None,
              max_body_kb: int | None = None):
    """FastAPI app: GET /health, GET /v1/models, POST /v1/chat/completions.

    Pass an ``assistant`` wired to a retriever (``app.assistants.make_assistant``) for the rag
    variants; without one, rag answers with an error saying an index is needed.

    It answers only for `hosts` (default: loopback names and $RAGTUNE_ALLOWED_HOSTS; ``ragtune serve``
    adds the address it listens on), which stops DNS rebinding, refuses state-changing requests from
    other sites, and reads a body no further than `max_body_kb` (default: the deploy server's 256 KB):
    the deploy server's own guard, body reader and error handlers.
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from .deploy.auth import read_json_body
    from .deploy.errors import error_response, install_error_handlers
    from .deploy.security import HostGuard, allowed_hosts
    from .deploy.state import DeployLimits
    from .engine import CancelToken
    from .streaming import sse_response, watch_disconnect

    assistant = assistant or Assistant(ws, engine)
    max_body_kb = max_body_kb or DeployLimits.max_body_kb
    app = FastAPI(title="ragtune", version=__version__, docs_url=None, redoc_url=None)
    app.state.hosts = hosts if hosts is not None else allowed_hosts()  # DeployServer adds the address it binds
    install_error_handlers(app)
    app.add_middleware(HostGuard, hosts=app.state.hosts, refuse=error_response)

    @app.get("/health")
    def health():
        healthy = getattr(engine, "healthy", None)
        ok = healthy() if callable(healthy) else True
        return JSONResponse({"status": "ok" if ok else "unavailable", "ragtune": __version__, "engine": engine.kind,
                             "model": engine.model_name, "workspace": ws.name}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragtune",
                                            "root": engine.model_name} for name in list_models(ws, engine)]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json_body(request, max_body_kb)
        cancel = CancelToken()
        try:
            result = await run_in_threadpool(chat_completion_response, body, assistant, cancel)
        except Exception as exc:
            status, error = error_body(exc)
            return JSONResponse(error, status_code=status)
        if isinstance(result, dict):
            return JSONResponse(result)
        return sse_response(result, cancel, watch_disconnect(request, cancel))

    return app
