"""What every inference engine offers, whichever process runs the model.

Two engines implement it: ``serving.embedded.EmbeddedEngine`` (transformers + peft in this
process) and ``serving.vllm_engine.VLLMEngine`` (an OpenAI-compatible vLLM server). Nothing above
``serving/`` needs to know which one answers.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from ragtune.errors import BadInputError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


# The frequency penalty answers get when none is asked for. Gemma 3 270M's RAG answers to people's questions
# looped on a phrase in 3 of 40 (ntsb-paraphrased, policyqa) without it and in 0 and 1 of 40 with 0.6, no
# metric significantly lower with it; transformers' repetition penalty and n-gram blocking, measured against it, lowered token F1
# (bench/generation_loops.py --settings, docs/evaluation.md), so both stay off.
DEFAULT_FREQUENCY_PENALTY = 0.6


@dataclass
class SamplingOptions:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    # OpenAI's frequency penalty: each token's logit lowered by this times its count in the answer so far
    # (the prompt does not count, so quoting a passage costs nothing). Both engines apply it alike.
    frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY
    # transformers' repetition penalty (1 = off): the logit of every token already in the prompt or the answer
    # divided by it (multiplied when negative). vLLM takes it as an extra request field.
    repetition_penalty: float = 1.0
    # transformers' n-gram blocking (0 = off): no n-gram of this size twice in prompt + answer. The embedded
    # engine only; vLLM's server has none and refuses a request that asks for it.
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not -2.0 <= float(self.frequency_penalty) <= 2.0:
            raise BadInputError(f"frequency_penalty must be between -2 and 2, not {self.frequency_penalty!r}.")
        if not 0.0 < float(self.repetition_penalty) <= 2.0:
            raise BadInputError(f"repetition_penalty must be in (0, 2] (1 is off), not {self.repetition_penalty!r}.")
        if (isinstance(self.no_repeat_ngram_size, bool) or not isinstance(self.no_repeat_ngram_size, int)
                or self.no_repeat_ngram_size < 0):
            raise BadInputError(f"no_repeat_ngram_size must be a whole number >= 0 (0 is off), "
                                f"not {self.no_repeat_ngram_size!r}.")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise BadInputError(f"max_tokens must be a positive whole number, not {self.max_tokens!r}.")
        if not 0.0 <= float(self.temperature) <= 5.0:
            raise BadInputError(f"temperature must be between 0 and 5, not {self.temperature!r}.")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise BadInputError(f"top_p must be in (0, 1], not {self.top_p!r}.")

    @property
    def greedy(self) -> bool:
        return float(self.temperature) == 0.0


def decode_tokens_per_s(completion_tokens: int | None, ttft_s: float | None, latency_s: float | None) -> float | None:
    """Decode rate: the output tokens after the first over the time after the first token (None when the answer
    has fewer than two tokens). The speed of the model's token loop, without the prompt's processing."""
    decode_s = (latency_s or 0.0) - (ttft_s or 0.0)
    if not completion_tokens or completion_tokens < 2 or decode_s <= 0:
        return None
    return (completion_tokens - 1) / decode_s


def e2e_tokens_per_s(completion_tokens: int | None, latency_s: float | None) -> float | None:
    """End-to-end rate: the output tokens over the whole request's wall time, prompt processing (and, for an
    assistant's answer, retrieval) included (None when nothing was generated). What a caller waits for."""
    if not completion_tokens or not latency_s:
        return None
    return completion_tokens / latency_s


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    latency_s: float
    finish_reason: str  # "stop" | "length"
    model: str = ""
    adapter: str | None = None

    @property
    def decode_tokens_per_s(self) -> float | None:
        return decode_tokens_per_s(self.completion_tokens, self.ttft_s, self.latency_s)

    @property
    def e2e_tokens_per_s(self) -> float | None:
        return e2e_tokens_per_s(self.completion_tokens, self.latency_s)

    def to_dict(self) -> dict:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s,
                "e2e_tokens_per_s": self.e2e_tokens_per_s}


class GenerationCancelled(Exception):
    """The caller cancelled the generation (its client went away); not a failure of the engine."""


class CancelToken:
    """Set by whoever serves the answer when its client goes away; engines stop at the next step.

    Callbacks let an engine stop a wait that does not poll (the vLLM engine closes its HTTP stream).
    """

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def check(self) -> None:
        if self._event.is_set():
            raise GenerationCancelled()


@runtime_checkable
class Engine(Protocol):
    kind: str  # "embedded" | "vllm"
    model_name: str
    max_model_len: int

    def generate(self, messages: list[Message], options: SamplingOptions | None = None,
                 adapter: str | None = None, plain: bool = False) -> Generation: ...

    def stream(self, messages: list[Message], options: SamplingOptions | None = None,
               adapter: str | None = None, cancel: CancelToken | None = None,
               plain: bool = False) -> Iterator[str | Generation]: ...

    def load_adapter(self, name: str, path: str | Path) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def adapters(self) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


class BaseEngine:
    """What both engines share; each implements ``stream`` (text deltas, then one Generation)."""

    kind = ""
    model_name = ""
    max_model_len = 0

    plain_prompts = False  # a base model: the base and rag assistants prompt it as plain text

    def generate(self, messages: list[Message], options: SamplingOptions | None = None,
                 adapter: str | None = None, cancel: CancelToken | None = None, plain: bool = False) -> Generation:
        # Streaming underneath gives the time to the first token; the text is the same.
        return collect(self.stream(messages, options, adapter, cancel=cancel, plain=plain))

    def stream(self, messages: list[Message], options: SamplingOptions | None = None,
               adapter: str | None = None, cancel: CancelToken | None = None,
               plain: bool = False) -> Iterator[str | Generation]:
        """Text deltas, then one Generation. ``plain`` renders the messages with
        ``serving.plain_prompt.render_plain`` instead of the chat template."""
        raise NotImplementedError

    def adapter_path(self, name: str) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r})"


def check_messages(messages: list[Message], open_answer: bool = False) -> list[Message]:
    """Reject malformed chat messages with a sentence a user can act on.

    ``open_answer``: the messages may end with the start of an answer (an assistant message after the
    question), which the model continues; only plain prompts render one (``serving.plain_prompt``).
    """
    if not isinstance(messages, list) or not messages:
        raise BadInputError("A chat request needs at least one message.")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadInputError(f"Message {i + 1} must have a role of system, user or assistant.")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            parts = [(j, p.get("text", "")) for j, p in enumerate(content)
                     if isinstance(p, dict) and p.get("type") == "text"]
            wrong = next((j for j, text in parts if not isinstance(text, str)), None)
            if wrong is not None:
                raise BadInputError(f"Message {i + 1}, content part {wrong + 1}: 'text' must be a string "
                                    f"(messages[{i}].content[{wrong}].text).")
            content = "".join(text for _, text in parts)
        if not isinstance(content, str):
            raise BadInputError(f"Message {i + 1} has no text content.")
        clean.append({"role": m["role"], "content": content})
    opened = open_answer and len(clean) > 1 and clean[-1]["role"] == "assistant" and clean[-2]["role"] == "user"
    if clean[-1]["role"] != "user" and not opened:
        raise BadInputError("The last message must come from the user.")
    return clean


def too_long_error(prompt_tokens: int, max_model_len: int) -> BadInputError:
    return BadInputError(
        f"The prompt is {prompt_tokens} tokens but this model accepts at most {max_model_len} "
        "(prompt and answer together). Shorten the question or the conversation, or retrieve fewer passages."
    )


def completion_budget(prompt_tokens: int, max_tokens: int, max_model_len: int) -> int:
    """Tokens the answer may use: what was asked, capped by what is left of the context window."""
    room = max_model_len - prompt_tokens
    if room < 1:
        raise too_long_error(prompt_tokens, max_model_len)
    return min(max_tokens, room)


def adapter_key(name: str, path: str | Path, stamp: object = "") -> str:
    """Engine-side adapter name: the user's name plus a digest of where and when it was made.

    A retrained adapter (same name, new files) gets a new key, so it is loaded fresh rather than
    served from a stale copy, and two workspaces' adapters with the same name never collide.
    """
    digest = hashlib.sha1(f"{Path(path).resolve()}|{stamp}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


class StopTextFilter:
    """Cuts a growing text at the first stop string, holding back what could start one.

    Both engines return text without the stop string, as the OpenAI API does.
    """

    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = self.text[:cut]
            return self._emit(len(self.text))
        return self._emit(max(self.sent, len(self.text) - self.hold))

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out = self.text[self.sent:upto]
        self.sent = max(self.sent, upto)
        return out


@dataclass
class Timer:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def finish(self) -> tuple[float | None, float]:
        """(ttft_s, latency_s); a Generation derives its token rates from them."""
        latency = time.perf_counter() - self.start
        ttft = None if self.first is None else self.first - self.start
        return ttft, latency


def collect(stream: Iterator[str | Generation]) -> Generation:
    """Drain a stream and return its final Generation."""
    final = None
    for item in stream:
        if isinstance(item, Generation):
            final = item
    assert final is not None, "an engine stream must end with a Generation"
    return final
