"""The four assistants ragtune compares, as small pipelines over one engine and one retriever.

- ``base``: the base model, question only.
- ``rag``: retrieved passages, numbered, with citations.
- ``ft``: a fine-tuned LoRA adapter, question only.
- ``ft+rag``: the adapter, with the retrieved passages.

serving never imports retrieval: the layer above hands the Assistant a ``Retriever`` (or a way to open
one per question) and a ``PromptBuilder``, the protocols of ``serving.components``; the composition root
``app/wiring/assistants.py`` does that wiring (and ``evaluation/assistants.py`` for an evaluation's process).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from ragtune import adapters as adapter_registry
from ragtune.errors import BadInputError
from ragtune.models import canonical_name

from .citations import citation_suffix
from .components import OpenRetriever, Passage, PromptBuilder, Retriever
from .engine import Engine, Generation, SamplingOptions, adapter_key, collect
from .plain_prompt import PLAIN_STOP
from .prompts import clean_answer, get_prompts, system_prompt, user_prompts

VARIANTS = ("base", "rag", "ft", "ft+rag")
DEFAULT_K = 4
# A base model shown "Passages... Question: ..." tends to go on with a new "Question:" of its own.
RAG_STOP = ["\nQuestion:"]
CITATION_KEYS = ("doc", "page", "section", "text", "score", "citation")
DEFAULT_CONTEXT_TOKENS = 1200
_load_lock = threading.Lock()


def parse_variant(spec: str) -> tuple[str, str | None]:
    """``"ft+rag:myadapter"`` -> ``("ft+rag", "myadapter")``; ``"rag"`` -> ``("rag", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise BadInputError(f"Name a variant: one of {', '.join(VARIANTS)} (e.g. 'rag' or 'ft:my-adapter').")
    variant, _, adapter = spec.strip().partition(":")
    variant = variant.strip().lower()
    if variant not in VARIANTS:
        raise BadInputError(f"Unknown variant '{variant}': use one of {', '.join(VARIANTS)} "
                            "(an adapter goes after a colon, e.g. 'ft+rag:my-adapter').")
    adapter = adapter.strip() or None
    if adapter and not variant.startswith("ft"):
        raise BadInputError(f"The '{variant}' variant uses no adapter; use 'ft:{adapter}' or 'ft+rag:{adapter}'.")
    return variant, adapter


def format_variant(variant: str, adapter: str | None = None) -> str:
    return f"{variant}:{adapter}" if adapter and variant.startswith("ft") else variant


@dataclass
class Answer:
    text: str
    variant: str
    adapter: str | None
    model: str
    citations: list[dict] = field(default_factory=list)
    passages: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    latency_s: float = 0.0
    engine: str = ""
    finish_reason: str = ""
    retrieval_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prepared:
    messages: list[dict]
    variant: str
    adapter: str | None
    engine_adapter: str | None
    citations: list[dict]
    passages: list[dict]
    retrieval_s: float
    started: float
    options: SamplingOptions
    plain: bool = False  # prompted as plain text (a base model), not through the chat template


class Assistant:
    """Answers a question with one of the four variants, on one engine and the workspace's document search.

    ``open_retriever`` is called for each question that searches (base and ft never need an index), so a
    rebuilt index is used at once; a fixed ``retriever`` is used as it is.
    """

    def __init__(self, ws, engine: Engine, retriever: Retriever | None = None,
                 prompt_builder: PromptBuilder | None = None, *, open_retriever: OpenRetriever | None = None):
        self.ws = ws
        self.engine = engine
        self._retriever = retriever
        self._open_retriever = open_retriever
        self.prompt_builder = prompt_builder

    # ------------------------------------------------------------ public
    def answer(self, question: str, variant: str = "rag", adapter: str | None = None, history: list[dict] | None = None,
               options: SamplingOptions | None = None, k: int | None = None) -> Answer:
        prep = self._prepare(question, variant, adapter, history, options, k)
        return self._finish(prep, collect(self._generate(prep)))

    def stream(self, question: str, variant: str = "rag", adapter: str | None = None,
               history: list[dict] | None = None, options: SamplingOptions | None = None,
               k: int | None = None, cancel=None) -> Iterator[str | Answer]:
        """Text deltas as they come, then the Answer. Bad input raises before the first item.

        ``cancel`` (a ``serving.engine.CancelToken``) stops the generation, even one still waiting
        for the model: the stream then raises ``GenerationCancelled``.
        """
        prep = self._prepare(question, variant, adapter, history, options, k)
        return self._stream(prep, self._generate(prep, cancel))

    def _generate(self, prep: _Prepared, cancel=None) -> Iterator[str | Generation]:
        """The engine's text deltas and Generation for a prepared request (bad input raises here, before
        the first item, as the engine raises it)."""
        deltas = self.engine.stream(prep.messages, prep.options, adapter=prep.engine_adapter, cancel=cancel,
                                    plain=prep.plain)
        return self._continue_after_colon(prep, deltas, cancel) if prep.plain else deltas

    def _continue_after_colon(self, prep: _Prepared, deltas, cancel) -> Iterator[str | Generation]:
        """A base model prompted as plain text often opens a list with a colon and then a blank line, which
        ends a plain answer ("We use your information to:"). Such an answer is continued once: the prompt
        ends with the answer so far, and the engines' rule for a plain answer's first token (no new line,
        no end) keeps the list on the colon's line, within what is left of max_tokens."""
        first = yield from _text_then_generation(deltas)
        left = prep.options.max_tokens - first.completion_tokens
        if not (left > 0 and first.finish_reason == "stop" and first.text.rstrip().endswith(":")):
            yield first
            return
        head = first.text.rstrip()
        more = self.engine.stream(prep.messages + [{"role": "assistant", "content": head}],
                                  dataclasses.replace(prep.options, max_tokens=left), adapter=prep.engine_adapter,
                                  cancel=cancel, plain=True)
        spaced = False  # one space after the colon, whatever spacing the model starts with
        for item in more:
            if isinstance(item, Generation):
                yield _joined(first, head, item)
            elif spaced or item.strip():
                yield item if spaced else (" " if head == first.text else "") + item.lstrip()
                spaced = True

    def _stream(self, prep: _Prepared, deltas) -> Iterator[str | Answer]:
        for item in deltas:
            if isinstance(item, Generation):
                added: list[str] = []
                answer = self._finish(prep, item, added)
                if added:  # citations found after the text: the stream gets them as its last delta
                    yield added[0]
                yield answer
            else:
                yield item

    @property
    def retriever(self) -> Retriever | None:
        """The retriever for the next question: the fixed one, else a fresh look-up; None without search."""
        if self._retriever is None and self._open_retriever is not None:
            return self._open_retriever()
        return self._retriever

    def resolve_adapter(self, name: str | None):
        """The workspace's adapter record: the named one, or the newest LoRA when no name is given."""
        if name is None:
            candidates = [a for a in adapter_registry.list_adapters(self.ws) if not a.is_full_model]
            if not candidates:
                raise BadInputError(f"The 'ft' variants need a fine-tuned adapter, and workspace '{self.ws.name}' "
                                    "has none yet: train one first (`ragtune train`).")
            info = candidates[0]
        else:
            info = adapter_registry.get_adapter(self.ws, name)
        if info.is_full_model:
            raise BadInputError(f"'{info.name}' is a full fine-tune, a whole model rather than an adapter: serve it "
                                f"as its own model (--model {info.path}) with the 'base' or 'rag' variant.")
        if not _same_base(info.base_model, self.engine):
            raise BadInputError(f"The adapter '{info.name}' was trained on {info.base_model}, but this engine serves "
                                f"{self.engine.model_name}: start the engine with --model {info.base_model}.")
        return info

    # ------------------------------------------------------------ steps
    def _prepare(self, question, spec, adapter, history, options, k) -> _Prepared:
        started = time.perf_counter()
        variant, named = parse_variant(spec)
        if named and adapter and named != adapter:
            raise BadInputError(f"Two adapters named: '{named}' in the variant and '{adapter}' as an option.")
        adapter = named or adapter
        if not isinstance(question, str) or not question.strip():
            raise BadInputError("Ask a question: the text is empty.")
        question = question.strip()
        history = _clean_history(history)
        options = options or SamplingOptions()
        # A base model (no chat template of its own) is prompted as plain text for base and rag; an
        # adapter is prompted in the chat format it was trained on. Plain prompts carry only the
        # user's own system text, never ragtune's default wording.
        plain = variant in ("base", "rag") and bool(getattr(self.engine, "plain_prompts", False))
        system = system_prompt(user_prompts(self.ws) if plain else get_prompts(self.ws), variant)

        engine_adapter = None
        if variant.startswith("ft"):
            info = self.resolve_adapter(adapter)
            adapter = info.name
            engine_adapter = self._ensure_loaded(info)
        else:
            adapter = None

        citations: list[dict] = []
        passages: list[dict] = []
        retrieval_s = 0.0
        if variant.endswith("rag"):
            messages, citations, passages, retrieval_s = self._rag_messages(question, history, system, options, k,
                                                                            plain)
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + history + [
                {"role": "user", "content": question}]
        if options.stop is None and (plain or variant.endswith("rag")):
            options = dataclasses.replace(options, stop=list(PLAIN_STOP if plain else RAG_STOP))
        return _Prepared(messages, variant, adapter, engine_adapter, citations, passages, retrieval_s, started, options,
                         plain)

    def _rag_messages(self, question, history, system, options, k, plain=False):
        retriever = self.retriever  # one look-up per question: every step below sees the same index
        if self.prompt_builder is None or retriever is None:
            raise BadInputError("The 'rag' variants need document search, and this assistant was built without "
                                "it: build it with app.wiring.assistants.build_assistant (or pass a retriever and "
                                "retrieval.prompt.build_rag_messages).")
        settings = self.ws.get_setting("retrieval", {}) or {}
        # Passages per answer: the caller's, else the number chosen for this corpus when its index was built.
        k = int(k or retriever.answer_k or settings.get("k") or DEFAULT_K)
        if k < 1:
            raise BadInputError(f"k must be at least 1, not {k}.")
        t0 = time.perf_counter()
        found = list(retriever.retrieve(question, k=k))
        retrieval_s = time.perf_counter() - t0
        # Leave the answer and the question room inside the model's window.
        room = self.engine.max_model_len - options.max_tokens - self.engine.count_tokens(question) - 96
        for turn in history:
            room -= self.engine.count_tokens(turn["content"]) + 8
        budget = min(int(settings.get("max_context_tokens") or DEFAULT_CONTEXT_TOKENS), room)
        if budget < 32:
            raise BadInputError(
                f"No room left for passages: the model's window is {self.engine.max_model_len} tokens and the answer "
                f"may use {options.max_tokens}. Ask for a shorter answer or shorten the conversation.")
        # A worked example from the user's own corpus (never from ragtune's text), for a chat model's first turn.
        example = retriever.worked_example(found) if not history and not plain else None
        messages, used = self.prompt_builder(question, found, count_tokens=self.engine.count_tokens,
                                             max_context_tokens=budget, system=system or None, history=history or None,
                                             example=example, style="plain" if plain else "chat")
        citations = [{"n": n, **{key: d[key] for key in CITATION_KEYS}}
                     for n, d in enumerate(map(_passage_dict, used), start=1)]
        passages = [_passage_dict(p) for p in found]
        return messages, citations, passages, retrieval_s

    def _ensure_loaded(self, info) -> str:
        key = adapter_key(info.name, info.path, info.created_at)
        with _load_lock:
            if key not in self.engine.adapters():
                if not (Path(info.path) / "adapter_config.json").exists():
                    raise BadInputError(f"The adapter '{info.name}' has no weights at {info.path} any more: "
                                        "retrain it or delete it.")
                self.engine.load_adapter(key, info.path)
        return key

    def _finish(self, prep: _Prepared, gen: Generation, added: list[str] | None = None) -> Answer:
        ttft = None if gen.ttft_s is None else (prep.retrieval_s + gen.ttft_s)
        text = clean_answer(gen.text) if prep.variant.endswith("rag") else gen.text.strip()
        if prep.variant.endswith("rag"):
            suffix = citation_suffix(text, [c["text"] for c in prep.citations])
            text += suffix
            if suffix and added is not None:
                added.append(suffix)
        return Answer(text=text, variant=prep.variant, adapter=prep.adapter, model=self.engine.model_name,
                      citations=prep.citations, passages=prep.passages, prompt_tokens=gen.prompt_tokens,
                      completion_tokens=gen.completion_tokens, ttft_s=ttft,
                      latency_s=time.perf_counter() - prep.started, engine=self.engine.kind,
                      finish_reason=gen.finish_reason, retrieval_s=prep.retrieval_s)


def _text_then_generation(deltas) -> Iterator[str]:
    """Yields an engine stream's text deltas and returns its Generation."""
    for item in deltas:
        if isinstance(item, Generation):
            return item
        yield item
    raise AssertionError("an engine stream must end with a Generation")


def _joined(first: Generation, head: str, more: Generation) -> Generation:
    """One Generation for an answer made of two requests: both prompts were sent, so both count."""
    text = head + " " + more.text.strip() if more.text.strip() else head
    tokens = first.completion_tokens + more.completion_tokens
    latency = first.latency_s + more.latency_s
    return dataclasses.replace(
        more, text=text, prompt_tokens=first.prompt_tokens + more.prompt_tokens,
        completion_tokens=tokens, ttft_s=first.ttft_s, latency_s=latency)


def _clean_history(history) -> list[dict]:
    if not history:
        return []
    clean = []
    for i, turn in enumerate(history):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant") \
                or not isinstance(turn.get("content"), str):
            raise BadInputError(f"History turn {i + 1} must be {{'role': 'user' | 'assistant', 'content': text}}.")
        clean.append({"role": turn["role"], "content": turn["content"]})
    # Chat templates such as Gemma's want strict user/assistant alternation ending on the assistant.
    while clean and clean[0]["role"] != "user":
        clean.pop(0)
    if clean and clean[-1]["role"] == "user":
        clean.pop()
    return clean


def _passage_dict(p: Passage) -> dict:
    return {"doc": p.doc, "page": p.page, "section": p.section, "text": p.text,
            "score": float(p.score) if p.score is not None else None, "citation": p.citation,
            "chunk_id": p.chunk_id}


def _same_base(base_model: str, engine) -> bool:
    if canonical_name(str(base_model)) == canonical_name(engine.model_name):
        return True
    engine_path = getattr(engine, "model_path", None)
    try:
        return engine_path is not None and Path(base_model).expanduser().resolve() == Path(engine_path).resolve()
    except (OSError, ValueError):
        return False
