"""``ragtune serve``: an OpenAI-compatible API over the assistants, where `model` names a variant.

``model`` is ``base``, ``rag``, ``ft:<adapter>`` or ``ft+rag:<adapter>`` (``ft`` alone means the
newest adapter; the base model's own name means ``base``). Answers carry an extra ``ragtune``
field with the citations, the passages and the timings. Client system messages are ignored: each
variant has its own system prompt (``serving.prompts``).

The app comes from the one factory (``serving.openai_server``) with the ``LOOPBACK`` policy: no key,
answers only for loopback names, the address it listens on and ``RAGTUNE_ALLOWED_HOSTS``, takes
state-changing requests only from its own site. Bodies, errors and streams are the deploy server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ragtune import __version__
from ragtune import adapters as adapter_registry
from ragtune.errors import RagtuneError

from .engine import CancelToken, SamplingOptions, check_messages
from .host_guard import allowed_hosts
from .openai_protocol import (ChatCompletionRequest, CompletionIds, ErrorCode, HealthReport, ModelCard, ModelList,
                              RequestError, UsageInfo)
from .openai_server import DEFAULT_MAX_BODY_KB, CallerPolicy, Surface, body_of, create_openai_app
from .openai_stream import AnswerDone, AnswerEvent, TextDelta, encode_chunks
from .streaming import sse_response, watch_disconnect
from .variants import Answer, Assistant, format_variant, parse_variant

router = APIRouter()


@dataclass
class VariantRequest:
    """A chat request as ``Assistant.answer`` / ``Assistant.stream`` take it."""
    question: str
    variant: str
    adapter: str | None
    history: list[dict]
    options: SamplingOptions
    k: int | None

    def arguments(self) -> dict:
        return {"question": self.question, "variant": self.variant, "adapter": self.adapter,
                "history": self.history, "options": self.options, "k": self.k}


def variant_request(request: ChatCompletionRequest, assistant: Assistant) -> VariantRequest:
    """The variant `model` names and the conversation without the client's system messages."""
    model = (request.model or "").strip()
    if not model:
        raise RequestError("Name the assistant in `model`: base, rag, ft:<adapter> or ft+rag:<adapter>.", "model",
                           ErrorCode.MISSING_REQUIRED_PARAMETER)
    if model == assistant.engine.model_name:
        model = "base"
    variant, adapter = parse_variant(model)
    turns = [m for m in check_messages(request.messages) if m["role"] != "system"]
    return VariantRequest(question=turns[-1]["content"], variant=variant, adapter=adapter, history=turns[:-1],
                          options=request.sampling(request.requested_max_tokens or SamplingOptions.max_tokens),
                          k=request.ragtune.k if request.ragtune else None)


def _ragtune_field(answer: Answer) -> dict:
    d = answer.to_dict()
    d.pop("text")
    return d


def answer_events(items: Iterable[str | Answer]) -> Iterator[AnswerEvent]:
    """``Assistant.stream``'s text pieces and final ``Answer`` as the stream encoder's events."""
    try:
        for item in items:
            if isinstance(item, Answer):
                yield AnswerDone(item.text, item.finish_reason or "stop", item.prompt_tokens, item.completion_tokens,
                                 _ragtune_field(item), format_variant(item.variant, item.adapter))
            elif item:
                yield TextDelta(item)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a client that went away stops the generation


def chat_completion(request: ChatCompletionRequest, assistant: Assistant, cancel: CancelToken) -> dict | Iterator[str]:
    """A chat.completion body, or (``stream: true``) the SSE lines ending in ``[DONE]``. Bad requests
    (unknown variant or adapter, over-long prompt...) raise before any line is produced."""
    asked = variant_request(request, assistant)
    if not request.stream:
        answer = assistant.answer(**asked.arguments())
        ids = CompletionIds(format_variant(answer.variant, answer.adapter))
        return ids.completion(answer.text, answer.finish_reason,
                              UsageInfo.of(answer.prompt_tokens, answer.completion_tokens),
                              ragtune=_ragtune_field(answer)).dump()
    items = assistant.stream(**asked.arguments(), cancel=cancel)
    return encode_chunks(CompletionIds(format_variant(asked.variant, asked.adapter)), answer_events(items),
                         include_usage=request.include_usage)


def list_models(ws) -> list[str]:
    names = ["base", "rag"]
    try:
        for info in adapter_registry.list_adapters(ws):
            if not info.is_full_model:
                names += [f"ft:{info.name}", f"ft+rag:{info.name}"]
    except RagtuneError:
        pass
    return names


@router.get("/health")
def health(request: Request):
    ws, engine = request.app.state.ws, request.app.state.engine
    healthy = getattr(engine, "healthy", None)
    ok = healthy() if callable(healthy) else True
    report = HealthReport(status="ok" if ok else "unavailable", ragtune=__version__, engine=engine.kind,
                          model=engine.model_name, workspace=ws.name)
    return JSONResponse(report.dump(), status_code=200 if ok else 503)


@router.get("/v1/models")
def models(request: Request):
    ws, engine = request.app.state.ws, request.app.state.engine
    return ModelList(data=[ModelCard(id=name, owned_by="ragtune", root=engine.model_name)
                           for name in list_models(ws)]).dump()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatCompletionRequest = Depends(body_of(ChatCompletionRequest))):
    cancel = CancelToken()
    result = await run_in_threadpool(chat_completion, body, request.app.state.assistant, cancel)
    if isinstance(result, dict):
        return JSONResponse(result)
    return sse_response(result, cancel, watch_disconnect(request, cancel))


def build_app(ws, engine, assistant: Assistant | None = None, *, hosts: set[str] | None = None,
              max_body_kb: int | None = None):
    """The ``ragtune serve`` app: GET /health, GET /v1/models, POST /v1/chat/completions.

    Pass an ``assistant`` wired to a retriever for the rag variants; without one, rag answers with an
    error saying an index is needed. `hosts`: the host names it answers for (default: loopback names and
    $RAGTUNE_ALLOWED_HOSTS; ``ragtune serve`` adds the address it listens on); `max_body_kb`: the largest
    body read (default 256 KB, the deploy server's).
    """
    return create_openai_app([Surface(CallerPolicy.LOOPBACK, router)], title="ragtune",
                             hosts=hosts if hosts is not None else allowed_hosts(),
                             max_body_kb=max_body_kb or DEFAULT_MAX_BODY_KB,
                             state={"ws": ws, "engine": engine, "assistant": assistant or Assistant(ws, engine)})
