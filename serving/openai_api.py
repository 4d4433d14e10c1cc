"""An OpenAI-compatible API over the assistants: `model` names a variant, not a checkpoint.

``model`` is ``base``, ``rag``, ``ft:<adapter>`` or ``ft+rag:<adapter>`` (``ft`` alone means the
newest adapter; the base model's own name means ``base``). Answers carry an extra ``ragtune``
field with the citations, the passages and the timings. Client system messages are ignored: each
variant has its own system prompt (``serving.prompts``). ``chat_completion_response`` is the
reusable core, also used by the deployment server.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

from ragtune import __version__
from ragtune import adapters as adapter_registry
from ragtune.errors import BadInputError, ModelNotFoundError, RagtuneError, ServerUnavailableError

from .engine import SamplingOptions, check_messages
from .variants import Answer, Assistant, format_variant, parse_variant


def parse_request(body: dict, assistant: Assistant) -> dict:
    """Validate an OpenAI chat request; returns what Assistant.answer/stream takes."""
    if not isinstance(body, dict):
        raise BadInputError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadInputError("Name the assistant in `model`: base, rag, ft:<adapter> or ft+rag:<adapter>.")
    if model.strip() == assistant.engine.model_name:
        model = "base"
    variant, adapter = parse_variant(model)
    messages = check_messages(body.get("messages"))
    turns = [m for m in messages if m["role"] != "system"]
    if int(body.get("n") or 1) != 1:
        raise BadInputError("Only n=1 is supported.")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or SamplingOptions.max_tokens
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    try:
        options = SamplingOptions(max_tokens=int(max_tokens), temperature=float(0.0 if temperature is None else temperature),
                                  top_p=float(1.0 if top_p is None else top_p), stop=body.get("stop"),
                                  seed=body.get("seed"))
    except (TypeError, ValueError):
        raise BadInputError("max_tokens, temperature and top_p must be numbers.") from None
    extra = body.get("ragtune") or {}
    return {"question": turns[-1]["content"], "variant": variant, "adapter": adapter, "history": turns[:-1],
            "options": options, "k": extra.get("k") if isinstance(extra, dict) else None}


def _ragtune_field(answer: Answer) -> dict:
    d = answer.to_dict()
    d.pop("text")
    return d


def _usage(answer: Answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def chat_completion_response(body: dict, assistant: Assistant) -> dict | Iterator[str]:
    """A chat.completion dict, or (``stream: true``) an iterator of SSE lines ending in ``[DONE]``.

    Bad requests (unknown variant or adapter, over-long prompt...) raise RagtuneError before any
    line is produced; a failure mid-stream becomes an ``error`` event, then ``[DONE]``.
    """
    request = parse_request(body, assistant)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = format_variant(request["variant"], request["adapter"])
    if not body.get("stream"):
        answer = assistant.answer(**request)
        return {"id": completion_id, "object": "chat.completion", "created": created,
                "model": format_variant(answer.variant, answer.adapter),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason or "stop", "logprobs": None}],
                "usage": _usage(answer), "ragtune": _ragtune_field(answer)}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    items = assistant.stream(**request)
    return _sse(items, completion_id, created, model, include_usage)


def _sse(items, completion_id: str, created: int, model: str, include_usage: bool) -> Iterator[str]:
    def chunk(delta: dict | None, finish=None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                      "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for item in items:
            if isinstance(item, Answer):
                model = format_variant(item.variant, item.adapter)
                yield chunk({}, item.finish_reason or "stop", ragtune=_ragtune_field(item))
                if include_usage:
                    yield chunk(None, usage=_usage(item))
            elif item:
                yield chunk({"content": item})
    except Exception as exc:  # the response has started: report in-band, keep the server up
        status, error = error_body(exc)
        yield f"data: {json.dumps(error, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def error_body(exc: Exception) -> tuple[int, dict]:
    """HTTP status and OpenAI-style error object for an exception."""
    if isinstance(exc, ServerUnavailableError):
        status, kind = 503, "server_unavailable"
    elif isinstance(exc, ModelNotFoundError):
        status, kind = 404, "model_not_found"
    elif isinstance(exc, BadInputError):
        status, kind = 400, "invalid_request_error"
    elif isinstance(exc, RagtuneError):
        status, kind = 500, "ragtune_error"
    else:
        status, kind = 500, "internal_error"
    message = str(exc) if isinstance(exc, RagtuneError) else f"Internal error ({type(exc).__name__}: {exc})."
    return status, {"error": {"message": message, "type": kind, "param": None, "code": status}}


def list_models(ws, engine) -> list[str]:
    names = ["base", "rag"]
    try:
        for info in adapter_registry.list_adapters(ws):
            if not info.is_full_model:
                names += [f"ft:{info.name}", f"ft+rag:{info.name}"]
    except RagtuneError:
        pass
    return names


def build_app(ws, engine, assistant: Assistant | None = None):
    """FastAPI app: GET /health, GET /v1/models, POST /v1/chat/completions.

    Pass an ``assistant`` wired to a retriever (``app.assistants.make_assistant``) for the rag
    variants; without one, rag answers with an error saying an index is needed.
    """
    from fastapi import Body, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    assistant = assistant or Assistant(ws, engine)
    app = FastAPI(title="ragtune", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        status, body = error_body(BadInputError("The request body must be a JSON object with `model` and `messages`."))
        return JSONResponse(body, status_code=status)

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
    def chat_completions(body: dict = Body(...)):
        try:
            result = chat_completion_response(body, assistant)
        except Exception as exc:
            status, error = error_body(exc)
            return JSONResponse(error, status_code=status)
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
