"""One stream encoder for both OpenAI servers: typed answer events in, ``chat.completion.chunk`` SSE lines out.

An answer is a sequence of events: ``TextDelta`` pieces, then one ``AnswerDone``; or an ``AnswerFailed``
(at the start, the server answers it as an HTTP error; once text has gone out, as an ``error`` event in the
stream). ``ragtune serve`` makes them from ``Assistant.stream`` (``openai_api.answer_events``), the deploy server in
``serving.deploy.answers``; ``encode_chunks`` turns either into the same lines, ending in ``[DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Union

from .openai_errors import ApiError, error_for
from .openai_protocol import CompletionIds, DeltaMessage, UsageInfo, WireModel

DONE_EVENT = "data: [DONE]\n\n"


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class AnswerDone:
    """The end of an answer: what the final chunk (or the whole completion) says."""
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ragtune: dict = field(default_factory=dict)  # citations, timings; the deploy server adds the message id
    model: str | None = None  # the model name the answer turned out to have (``ft`` -> ``ft:<newest adapter>``)

    @property
    def usage(self) -> UsageInfo:
        return UsageInfo.of(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class AnswerFailed:
    error: ApiError


AnswerEvent = Union[TextDelta, AnswerDone, AnswerFailed]


def sse(body: WireModel) -> str:
    return f"data: {json.dumps(body.dump(), ensure_ascii=False)}\n\n"


def encode_chunks(ids: CompletionIds, events: Iterable[AnswerEvent], include_usage: bool = False) -> Iterator[str]:
    """The SSE lines of one answer: the role chunk, a chunk per text delta, the final chunk (finish reason,
    usage, the ``ragtune`` field), OpenAI's usage-only chunk when asked, then ``[DONE]``. An exception
    from `events` or an ``AnswerFailed`` becomes an ``error`` event: the response has started, so the
    error is reported in-band and the server stays up. Closing this closes `events` (a client that went
    away stops the generation)."""
    yield sse(ids.chunk(DeltaMessage(role="assistant", content="")))
    try:
        for event in events:
            if isinstance(event, TextDelta):
                yield sse(ids.chunk(DeltaMessage(content=event.text)))
            elif isinstance(event, AnswerDone):
                ids.model = event.model or ids.model
                yield sse(ids.chunk(DeltaMessage(), event.finish_reason, usage=event.usage, ragtune=event.ragtune))
                if include_usage:
                    yield sse(ids.chunk(None, usage=event.usage))
            else:
                yield sse(event.error.body())
    except Exception as exc:  # noqa: BLE001 - reported in the stream; error_for logs a bug
        yield sse(error_for(exc).body())
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    yield DONE_EVENT

