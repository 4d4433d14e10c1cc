"""Answering one chat request: the turn stored and counted, as one JSON answer or a stream that always stops.

``answer_events`` yields the stream encoder's typed events (``TextDelta``..., ``AnswerDone``, or
``AnswerFailed``); ``TurnRecord`` does the bookkeeping of one answer (in-flight gauge, stored turn,
metrics, request log). A streamed answer watches its client: when the client goes away (or a
non-streamed caller hangs up while waiting), a ``CancelToken`` stops the generation, even one still
queued for the model, so the in-flight gauge and the cancelled count stay true under load.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from typing import Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ragtune import feedback as feedback_store
from ragtune.errors import BadInputError
from serving.engine import CancelToken, GenerationCancelled, check_messages
from serving.openai_errors import ApiError, create_error_response, error_for, error_response
from serving.openai_protocol import ChatCompletionRequest, CompletionIds, ErrorCode, FeedbackRequest
from serving.openai_stream import AnswerDone, AnswerEvent, AnswerFailed, TextDelta, encode_chunks
from serving.streaming import sse_response, watch_disconnect

from . import deployments, metrics
from .state import DeployState

log = logging.getLogger("ragtune.deploy")


def live_deployment(ws) -> deployments.Deployment:
    d = deployments.current(ws)
    if d is None:
        raise ApiError(503, "This assistant is not published right now.", ErrorCode.NOT_PUBLISHED)
    return d


def check_chat(request: ChatCompletionRequest, limits) -> tuple[list[dict], int]:
    """The messages and the answer length this server allows for a (well-formed) request."""
    if len(request.messages) > limits.max_messages:
        raise ApiError(400, f"At most {limits.max_messages} messages per request; start a new conversation.",
                       ErrorCode.TOO_MANY_MESSAGES, param="messages")
    messages = check_messages(request.messages)
    for m in messages:
        if len(m["content"]) > limits.max_message_chars:
            raise ApiError(400, f"A message is {len(m['content'])} characters; the limit is "
                                f"{limits.max_message_chars}.", ErrorCode.PROMPT_TOO_LONG, param="messages")
    total = sum(len(m["content"]) for m in messages)
    if total > limits.max_prompt_chars:
        raise ApiError(400, f"The conversation is {total} characters; the limit is {limits.max_prompt_chars}. "
                            "Start a new conversation.", ErrorCode.PROMPT_TOO_LONG, param="messages")
    if not messages[-1]["content"].strip():
        raise ApiError(400, "The question is empty.", ErrorCode.EMPTY_QUESTION, param="messages")
    requested = request.requested_max_tokens or limits.default_max_tokens
    return messages, min(requested, limits.max_tokens)


class TurnRecord:
    """The bookkeeping of one answer: in flight while it runs; stored, counted and logged when it completes;
    counted as cancelled (the client went away: not the service's failure) or failed otherwise."""

    def __init__(self, state: DeployState, ws, d: deployments.Deployment, *, channel: str, client: str):
        self.state, self.ws, self.d, self.channel, self.client = state, ws, d, channel, client
        self.started, self.ttft, self.parts = time.perf_counter(), None, []
        self.status, self.error_reason = "cancelled", None
        state.metrics.in_flight.labels(ws.name).inc()

    def text(self, piece: str) -> TextDelta:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started
        self.parts.append(piece)
        return TextDelta(piece)

    def completed(self, final, question: str, history: list[dict], conversation_id: str | None) -> AnswerDone:
        ws, d, latency = self.ws, self.d, time.perf_counter() - self.started
        prompt_tokens, completion_tokens = int(final.prompt_tokens or 0), int(final.completion_tokens or 0)
        citations, text = list(final.citations or []), final.text or "".join(self.parts)
        turn = feedback_store.record_conversation(
            ws, question, text, variant=d.variant, adapter=d.adapter, deployment_version=d.version,
            conversation_id=conversation_id, channel=self.channel, client=self.client, history=history,
            citations=citations, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_s=latency)
        self.status = "ok"
        self.state.metrics.observe_answer(ws.name, d.model, latency, self.ttft, prompt_tokens, completion_tokens)
        metrics.record_request(ws, model=d.model, channel=self.channel, status="ok", deployment_version=d.version,
                               latency_s=latency, ttft_s=self.ttft, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens)
        log.info("answered ws=%s v%s model=%s channel=%s tokens=%d+%d latency=%.3fs", ws.name, d.version, d.model,
                 self.channel, prompt_tokens, completion_tokens, latency)
        return AnswerDone(text, final.finish_reason or "stop", prompt_tokens, completion_tokens,
                          {**turn, "deployment_version": d.version, "variant": d.variant, "adapter": d.adapter,
                           "citations": citations, "latency_s": latency, "ttft_s": self.ttft})

    def failed(self, exc: Exception) -> AnswerFailed:
        self.status, self.error_reason = "error", type(exc).__name__
        return AnswerFailed(error_for(exc))  # a bug is logged there; a RagtuneError speaks for itself

    def close(self) -> None:
        ws, model, stats = self.ws, self.d.model, self.state.metrics
        stats.in_flight.labels(ws.name).dec()
        if self.status == "ok":
            return
        if self.status == "cancelled":
            stats.requests.labels(ws.name, model, "cancelled").inc()
        else:
            stats.observe_error(ws.name, model, self.error_reason)
        try:
            metrics.record_request(ws, model=model, channel=self.channel, status=self.status,
                                   deployment_version=self.d.version, latency_s=time.perf_counter() - self.started,
                                   ttft_s=self.ttft, completion_tokens=len(self.parts), error=self.error_reason)
        except Exception:  # noqa: BLE001 - the log write must not mask the original error
            log.warning("could not record a failed request for ws=%s", ws.name)


def answer_events(state: DeployState, ws, d: deployments.Deployment, messages: list[dict], options, *,
                  channel: str, client: str, conversation_id: str | None,
                  cancel: CancelToken) -> Iterator[AnswerEvent]:
    """``TextDelta`` events, then ``AnswerDone``; or one ``AnswerFailed``. Closed early or cancelled, the
    answer counts as cancelled (``TurnRecord``)."""
    question = messages[-1]["content"]
    history = [m for m in messages[:-1] if m["role"] in ("user", "assistant")]
    record = TurnRecord(state, ws, d, channel=channel, client=client)
    try:
        final = None
        for item in state.assistant_for(ws).stream(question, variant=d.variant, adapter=d.adapter, history=history,
                                                   options=options, cancel=cancel):
            if not isinstance(item, str):
                final = item
            elif item:
                yield record.text(item)
        yield record.completed(final, question, history, conversation_id)
    except GenerationCancelled:
        return
    except GeneratorExit:
        raise
    except Exception as exc:  # noqa: BLE001 - a model failure must not take the server down
        yield record.failed(exc)
    finally:
        record.close()


def _chain(first: AnswerEvent, rest: Iterator[AnswerEvent]) -> Iterator[AnswerEvent]:
    try:
        yield first
        yield from rest
    finally:
        rest.close()


def _went_away(cancel: CancelToken) -> JSONResponse:
    if cancel.cancelled:
        return create_error_response(499, "The client went away.", ErrorCode.CANCELLED)
    return create_error_response(500, "The assistant returned nothing.")


def _whole_answer(ids: CompletionIds, events: Iterator[AnswerEvent], cancel: CancelToken) -> JSONResponse:
    with closing(events):
        for event in events:
            if isinstance(event, AnswerFailed):
                return error_response(event.error)
            if isinstance(event, AnswerDone):
                return JSONResponse(ids.completion(event.text, event.finish_reason, event.usage, event.ragtune).dump())
    return _went_away(cancel)


def _response(state: DeployState, ws, d, request: ChatCompletionRequest, *, channel: str, client: str,
              cancel: CancelToken) -> Response | Iterator[str]:
    """Blocking part (a worker thread): a JSONResponse, or (streaming) the SSE lines once the first text is there."""
    messages, max_tokens = check_chat(request, state.limits)
    events = answer_events(state, ws, d, messages, request.sampling(max_tokens), channel=channel, client=client,
                           conversation_id=request.conversation_id, cancel=cancel)
    first = next(events, None)
    if first is None:
        return _went_away(cancel)
    if isinstance(first, AnswerFailed):  # failed before any text: a real HTTP error, not a broken stream
        events.close()
        return error_response(first.error)
    ids = CompletionIds(f"{ws.name}/{d.model}")
    if request.stream:
        return encode_chunks(ids, _chain(first, events), include_usage=request.include_usage)
    return _whole_answer(ids, _chain(first, events), cancel)


async def chat(state: DeployState, request: Request, ws, body: ChatCompletionRequest, *, client: str, channel: str):
    """Answer a chat request for `ws`; the generation stops when the client goes away."""
    d = await run_in_threadpool(live_deployment, ws)
    cancel = CancelToken()
    watcher = watch_disconnect(request, cancel)
    try:
        result = await run_in_threadpool(_response, state, ws, d, body, channel=channel, client=client, cancel=cancel)
    except BaseException:
        watcher.cancel()
        raise
    if isinstance(result, Response):
        watcher.cancel()
        return result
    return sse_response(result, cancel, watcher)


def _record_feedback(ws, feedback: FeedbackRequest, client: str) -> dict:
    """A 404 when the answer is not one this client was given (checked here, typed); the store's own rules
    (a rating, correction or comment; their lengths) are 400s."""
    try:
        turn = feedback_store.get_turn(ws, feedback.message_id)
    except BadInputError:  # get_turn's only failure: no such answer in this workspace
        turn = None
    if turn is None or turn.get("client") != client:
        raise ApiError(404, f"No answer '{feedback.message_id}' was given to this client in this workspace; "
                            "feedback must refer to an answer it received.", ErrorCode.NOT_FOUND, param="message_id")
    return feedback_store.record_feedback(ws, feedback.message_id, feedback.rating_name, feedback.correction,
                                          feedback.comment, client=client)


async def give_feedback(state: DeployState, ws, feedback: FeedbackRequest, *, client: str) -> dict:
    """A rating or a correction of an earlier answer (named by its ``message_id``)."""
    row = await run_in_threadpool(_record_feedback, ws, feedback, client)
    model = f"{row['variant']}:{row['adapter']}" if row["adapter"] else row["variant"]
    state.metrics.observe_feedback(ws.name, model, row["rating"])
    log.info("feedback ws=%s v%s rating=%s correction=%s", ws.name, row["deployment_version"], row["rating"],
             bool(row["correction"]))
    return {"ok": True, "message_id": row["message_id"], "rating": row["rating"],
            "correction": row["correction"] is not None}
