"""Chat-model teachers: any chat model writes the question/answer pairs of a chunk, prompted in the RAFT
style (several paraphrased questions per fact, answers quoting the passage).

- ``ChatTeacher``: any chat model behind a ``complete(messages) -> str`` function. The local engine is
  used through it by wrapping its ``generate``.
- ``openai_teacher``: a ChatTeacher over any OpenAI-compatible endpoint (a bigger model on vLLM, a hosted
  API), with retries (tenacity) and a rate limit shared by the worker threads.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ragtune.errors import BadInputError, ServerUnavailableError

from .teachers import ChunkView, Fact

RAFT_SYSTEM = (
    "You write training data for a company assistant. You read one passage of a company document and "
    "write question/answer pairs that a colleague or customer could ask about it. Use only facts stated in "
    "the passage. Reply with JSON only."
)
RAFT_USER = """Passage from {doc}{page}:
<<<
{text}
>>>

Pick up to {max_facts} distinct, specific facts from the passage (numbers, names, rules, codes).
For each fact write {n} differently worded questions that someone who has not read the passage would ask,
one answer of one or two sentences that quotes the passage's wording, and the exact supporting quote
copied from the passage.
Reply with a JSON list only:
[{{"questions": ["...", "..."], "answer": "...", "quote": "..."}}]"""


def parse_teacher_reply(text: str) -> list[dict]:
    """The JSON list in a model reply (tolerates prose or code fences around it)."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        raise ValueError("no JSON list in the teacher's reply")
    items = json.loads(text[start:end + 1])
    if not isinstance(items, list):
        raise ValueError("the teacher's reply is not a list")
    return [i for i in items if isinstance(i, dict)]


class ChatTeacher:
    """RAFT-style generation with any chat model behind `complete(messages) -> str`."""

    def __init__(self, complete: Callable[[list[dict]], str], name: str, parse_retries: int = 1):
        self.complete, self.name, self.parse_retries = complete, name, parse_retries
        self.failures = 0

    def facts(self, chunk: ChunkView, questions_per_fact: int = 3, max_facts: int = 6) -> list[Fact]:
        messages = [
            {"role": "system", "content": RAFT_SYSTEM},
            {"role": "user", "content": RAFT_USER.format(
                doc=chunk.doc, page=f", page {chunk.page}" if chunk.page else "", text=chunk.text.strip(),
                max_facts=max_facts, n=questions_per_fact)},
        ]
        for _ in range(self.parse_retries + 1):
            reply = self.complete(messages)
            try:
                items = parse_teacher_reply(reply)
            except (ValueError, json.JSONDecodeError):
                continue
            facts = []
            for i, item in enumerate(items[:max_facts]):
                qs = [q.strip() for q in item.get("questions") or [] if isinstance(q, str) and q.strip()]
                answer = item.get("answer")
                if qs and isinstance(answer, str) and answer.strip():
                    quote = item.get("quote") if isinstance(item.get("quote"), str) else answer
                    facts.append(Fact(qs[:questions_per_fact], answer.strip(), quote.strip(), i))
            return facts
        self.failures += 1
        return []


class RateLimiter:
    """At most `per_minute` calls per minute, spaced evenly; shared by worker threads."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute and per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@dataclass
class OpenAITeacherSettings:
    url: str
    model: str
    api_key: str = "EMPTY"
    requests_per_minute: float = 60.0
    max_retries: int = 4
    timeout_s: float = 120.0
    max_tokens: int = 1024
    temperature: float = 0.3
    extra: dict = field(default_factory=dict)


def openai_complete(settings: OpenAITeacherSettings) -> Callable[[list[dict]], str]:
    """A `complete(messages)` over an OpenAI-compatible endpoint, with retries and a rate limit."""
    import openai
    from tenacity import (retry, retry_if_exception_type, stop_after_attempt, wait_exponential)

    client = openai.OpenAI(base_url=settings.url.rstrip("/"), api_key=settings.api_key or "EMPTY",
                           max_retries=0, timeout=settings.timeout_s)
    limiter = RateLimiter(settings.requests_per_minute)
    transient = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                 openai.InternalServerError)

    @retry(retry=retry_if_exception_type(transient), stop=stop_after_attempt(settings.max_retries + 1),
           wait=wait_exponential(multiplier=0.5, max=20), reraise=True)
    def call(messages: list[dict]) -> str:
        limiter.wait()
        reply = client.chat.completions.create(model=settings.model, messages=messages,
                                               max_tokens=settings.max_tokens, temperature=settings.temperature,
                                               **settings.extra)
        return reply.choices[0].message.content or ""

    def complete(messages: list[dict]) -> str:
        try:
            return call(messages)
        except transient as exc:
            raise ServerUnavailableError(
                f"The teacher model '{settings.model}' at {settings.url} did not answer after "
                f"{settings.max_retries + 1} tries ({type(exc).__name__}). Check that the server is running, "
                "or use the extractive teacher."
            ) from None
        except openai.NotFoundError:
            raise BadInputError(
                f"The server at {settings.url} has no model '{settings.model}'; check --teacher-model."
            ) from None
        except openai.AuthenticationError:
            raise BadInputError(f"The server at {settings.url} refused the API key; set --teacher-api-key.") from None

    return complete


def openai_teacher(settings: OpenAITeacherSettings) -> ChatTeacher:
    return ChatTeacher(openai_complete(settings), name=f"openai:{settings.model}@{settings.url}")
