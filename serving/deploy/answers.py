"""Answering one chat request: the turn stored and counted, as one JSON answer or a stream that always stops.

A streamed answer watches its client: when the client goes away (or a non-streamed caller hangs
up while waiting), a ``CancelToken`` stops the generation, even one still queued for the model,
so the in-flight gauge and the cancelled count stay true under load.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ragtune import feedback as feedback_store
from ragtune.errors import RagtuneError, ServerUnavailableError
from serving.engine import CancelToken, GenerationCancelled
from serving.openai_format import DONE_EVENT, ChatCompletionRequest, CompletionFormat, error_event, \
    parse_chat_request, usage
from serving.streaming import sse_response, watch_disconnect

from . import deployments, metrics
from .errors import HTTP_CODES, ApiError, error_response
from .state import DeployState

log = logging.getLogger("ragtune.deploy")


def live_deployment(ws) -> deployments.Deployment:
    d = deployments.current(ws)
    if d is None:
        raise ApiError(503, "This assistant is not published right now.", "not_published")
    return d


def check_chat(request: ChatCompletionRequest, limits) -> tuple[list[dict], int]:
    """The messages and the answer length this server allows for a (well-formed) request."""
    from serving.engine import check_messages

    if len(request.messages) > limits.max_messages:
        raise ApiError(400, f"At most {limits.max_messages} messages per request; start a new conversation.",
                       "too_many_messages", param="messages")
    messages = check_messages(request.messages)
    for m in messages:
        if len(m["content"]) > limits.max_message_chars:
            raise ApiError(400, f"A message is {len(m['content'])} characters; the limit is "
                                f"{limits.max_message_chars}.", "prompt_too_long", param="messages")
    total = sum(len(m["content"]) for m in messages)
    if total > limits.max_prompt_chars:
        raise ApiError(400, f"The conversation is {total} characters; the limit is {limits.max_prompt_chars}. "
                            "Start a new conversation.", "prompt_too_long", param="messages")
    if not messages[-1]["content"].strip():
        raise ApiError(400, "The question is empty.", "empty_question", param="messages")
    requested = request.requested_max_tokens or limits.default_max_tokens
    return messages, min(requested, limits.max_tokens)


def answer_events(state: DeployState, ws, d: deployments.Deployment, messages: list[dict], options, *,
                  channel: str, client: str, conversation_id: str | None, cancel: CancelToken) -> Iterator[dict]:
    """``{"delta": text}`` events, then ``{"final": True, ...}``; or one ``{"error", "status"}`` event.

    Stores the turn and counts it when the answer completes. Closed early or cancelled, it counts
    a cancelled request (the client went away: not the service's failure).
    """
    stats = state.metrics
    assistant = state.assistant_for(ws)
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
                                     options=options, cancel=cancel):
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
    except GenerationCancelled:
        return
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
        if status == "cancelled":
            stats.requests.labels(ws.name, model, "cancelled").inc()
        elif status != "ok":
            stats.observe_error(ws.name, model, error_reason)
        if status != "ok":
            try:
                metrics.record_request(ws, model=model, channel=channel, status=status, deployment_version=d.version,
                                       latency_s=time.perf_counter() - started, ttft_s=ttft,
                                       completion_tokens=len(parts), error=error_reason)
            except Exception:  # noqa: BLE001 - the log write must not mask the original error
                log.warning("could not record a failed request for ws=%s", ws.name)


def _response(state: DeployState, ws, d, request: ChatCompletionRequest, *, channel: str, client: str,
              cancel: CancelToken):
    """Blocking part (a worker thread): a JSONResponse, or (streaming) the SSE lines once the first text is there."""
    messages, max_tokens = check_chat(request, state.limits)
    fmt = CompletionFormat(f"{ws.name}/{d.model}")
    events = answer_events(state, ws, d, messages, request.sampling(max_tokens), channel=channel, client=client,
                           conversation_id=request.conversation_id, cancel=cancel)
    first = next(events, None)
    if first is None:
        return error_response(499 if cancel.cancelled else 500, "The client went away." if cancel.cancelled
                              else "The assistant returned nothing.", "cancelled" if cancel.cancelled else None)
    if "error" in first:  # failed before any text: a real HTTP error, not a broken stream
        events.close()
        return error_response(first["status"], first["error"])
    if request.stream:
        return _sse(fmt, first, events)
    final = None
    try:
        for event in _chain(first, events):
            if "error" in event:
                return error_response(event["status"], event["error"])
            if event.get("final"):
                final = event
    finally:
        events.close()
    if final is None:
        return error_response(499, "The client went away.", "cancelled")
    return JSONResponse(fmt.completion(final["text"], final["finish_reason"], final["prompt_tokens"],
                                       final["completion_tokens"], ragtune=final["ragtune"]))


def _sse(fmt: CompletionFormat, first: dict, events) -> Iterator[str]:
    """The chunks of one answer; closing this closes the answer (which counts it as cancelled)."""
    try:
        yield fmt.first_chunk()
        for event in _chain(first, events):
            if "delta" in event:
                yield fmt.chunk({"content": event["delta"]})
            elif "error" in event:
                yield error_event(event["status"], event["error"], HTTP_CODES.get(event["status"]))
            else:
                yield fmt.chunk({}, event["finish_reason"], usage=usage(event["prompt_tokens"],
                                                                         event["completion_tokens"]),
                                ragtune=event["ragtune"])
    finally:
        events.close()
    yield DONE_EVENT


async def chat(state: DeployState, request: Request, ws, body: dict, *, client: str, channel: str):
    """Answer a chat request for `ws`; the generation stops when the client goes away."""
    chat_request = parse_chat_request(body)
    d = await run_in_threadpool(live_deployment, ws)
    cancel = CancelToken()
    watcher = watch_disconnect(request, cancel)
    try:
        result = await run_in_threadpool(_response, state, ws, d, chat_request, channel=channel, client=client,
                                         cancel=cancel)
    except BaseException:
        watcher.cancel()
        raise
    if isinstance(result, Response):
        watcher.cancel()
        return result
    return sse_response(result, cancel, watcher)


def _chain(first, rest):
    yield first
    yield from rest


async def give_feedback(state: DeployState, ws, body: dict, *, client: str) -> dict:
    """A rating or a correction of an earlier answer (named by its ``message_id``)."""
    from ragtune.errors import BadInputError

    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise ApiError(400, "Feedback needs the 'message_id' of the answer (returned in the 'ragtune' field).",
                       "missing_required_parameter", param="message_id")
    rating = body.get("rating")
    if isinstance(rating, bool):
        rating = "up" if rating else "down"
    try:
        row = await run_in_threadpool(feedback_store.record_feedback, ws, message_id, rating,
                                      body.get("correction"), body.get("comment"), client=client)
    except BadInputError as exc:
        raise ApiError(404 if "No answer" in str(exc) else 400, str(exc),
                       "not_found" if "No answer" in str(exc) else "invalid_value") from None
    model = f"{row['variant']}:{row['adapter']}" if row["adapter"] else row["variant"]
    state.metrics.observe_feedback(ws.name, model, row["rating"])
    log.info("feedback ws=%s v%s rating=%s correction=%s", ws.name, row["deployment_version"], row["rating"],
             bool(row["correction"]))
    return {"ok": True, "message_id": row["message_id"], "rating": row["rating"],
            "correction": row["correction"] is not None}
