"""The zero-setup engine: transformers + peft in this process.

One model, one generation at a time (a lock), LoRA adapters loaded by name with peft and switched
per request; the base model answers inside ``disable_adapter()``. Streaming runs ``generate`` in a
worker thread and reads its tokens from a queue, decoding each new token against a short window
(as TGI and vLLM do) rather than the whole answer again. A cancelled request stops waiting for the
model at once and stops the model at its next token.
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ragtune.errors import BadInputError, ModelNotFoundError
from ragtune.models import DEFAULT_LLM, resolve_llm

from .engine import (BaseEngine, CancelToken, Generation, GenerationCancelled, Message, SamplingOptions,
                     StopTextFilter, Timer, check_messages, completion_budget)
from .plain_prompt import newline_token_ids, render_plain

DEFAULT_MAX_MODEL_LEN = 2048
POLL_S = 0.05  # how often a waiting request looks at its cancel token
_DONE = object()


class IncrementalDecoder:
    """The text of a growing list of token ids, one delta per token, decoding a few tokens each time.

    The window starts one token before the new ones so tokenizers that drop a leading space at the
    start of a decode give the same text as decoding everything; a half multi-byte character waits.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0    # tokens already turned into text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]


class AnswerFrequencyPenalty:
    """OpenAI's frequency penalty as a transformers logits processor, as vLLM applies it: every token's logit
    lowered by `penalty` times its count in the answer so far; the prompt's tokens do not count
    (transformers' repetition_penalty counts them, which taxes quoting the passages a RAG answer needs)."""

    def __init__(self, n_prompt: int, penalty: float):
        self.n_prompt, self.penalty = n_prompt, float(penalty)

    def __call__(self, input_ids, scores):
        import torch  # heavy optional library: loaded with the engine, not with ragtune

        answer = input_ids[:, self.n_prompt:]
        if answer.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, answer, torch.ones(answer.shape, dtype=scores.dtype,
                                                                            device=scores.device))
        return scores - self.penalty * counts


class EmbeddedEngine(BaseEngine):
    kind = "embedded"

    def __init__(self, model: str = DEFAULT_LLM, *, dtype: str = "float32", max_model_len: int | None = None,
                 device: str = "cpu"):
        import torch  # heavy optional libraries: loaded with the engine, not with ragtune
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = resolve_llm(model)
        self.model_name = resolved.name
        self.model_path = resolved.path
        self.plain_prompts = resolved.plain_prompts
        self.device = device
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise BadInputError(f"Unknown dtype '{dtype}': use float32, bfloat16 or float16.")
        self.dtype = dtype
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            self.model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype).to(device)
        except OSError as exc:
            raise ModelNotFoundError(f"Cannot load the model '{model}' from {resolved.path}: {exc}") from None
        self.model.eval()
        # The training template carries {% generation %} tags; serve with the plain one, as vLLM does.
        template = resolved.serving_chat_template
        self.chat_template = template.read_text(encoding="utf-8") if template else None
        if self.chat_template is None and not self.tokenizer.chat_template and not self.plain_prompts:
            raise ModelNotFoundError(f"The model '{model}' has no chat template, so it cannot answer chat messages.")
        limit = getattr(self.model.config, "max_position_embeddings", None) or DEFAULT_MAX_MODEL_LEN
        self.max_model_len = int(max_model_len or min(limit, DEFAULT_MAX_MODEL_LEN))
        self.stop_token_ids = _stop_token_ids(self.tokenizer, self.model)
        # Once here, not on the first plain-prompt request: it reads the whole vocabulary (262k for Gemma).
        self.newline_ids = newline_token_ids(self.tokenizer)
        self._lock = threading.Lock()
        self._adapters: dict[str, str] = {}

    # ------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[Message], plain: bool = False) -> list[int]:
        if plain:  # the tokenizer adds <bos> itself
            return list(self.tokenizer(render_plain(messages))["input_ids"])
        if self.chat_template is None and not self.tokenizer.chat_template:
            raise BadInputError(f"The model '{self.model_name}' has no chat template: it answers only the base and "
                                "rag assistants, which prompt it as plain text.")
        # The template writes <bos> itself; tokenizing here avoids a second one.
        out = self.tokenizer.apply_chat_template(check_messages(messages), chat_template=self.chat_template,
                                                 add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])

    # ------------------------------------------------------------ adapters
    def load_adapter(self, name: str, path: str | Path) -> None:
        from peft import PeftModel  # heavy optional library: only when an adapter is loaded

        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise BadInputError(f"No LoRA adapter at {path} (adapter_config.json is missing).")
        with self._lock:
            if name in self._adapters:
                self._drop(name)
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(path), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise BadInputError(f"The adapter '{name}' at {path} does not fit {self.model_name}: {exc}") from None
            self.model.eval()
            self._adapters[name] = str(path)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise self._unknown_adapter(name)
            self._drop(name)

    def _drop(self, name: str) -> None:
        if len(self._adapters) == 1:  # peft cannot run with no adapter left: go back to the plain model
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(name)
        del self._adapters[name]

    def adapters(self) -> list[str]:
        return list(self._adapters)

    def adapter_path(self, name: str) -> str | None:
        return self._adapters.get(name)

    def _unknown_adapter(self, name: str) -> BadInputError:
        known = ", ".join(self._adapters) or "none"
        return BadInputError(f"Unknown adapter '{name}' on this engine (loaded: {known}).")

    # ------------------------------------------------------------ generation
    def stream(self, messages: list[Message], options: SamplingOptions | None = None,
               adapter: str | None = None, cancel: CancelToken | None = None,
               plain: bool = False) -> Iterator[str | Generation]:
        options = options or SamplingOptions()
        if adapter is not None and adapter not in self._adapters:
            raise self._unknown_adapter(adapter)
        ids = self.prompt_ids(messages, plain=plain)
        budget = completion_budget(len(ids), options.max_tokens, self.max_model_len)
        # After "Answer:" a base model may open a new line and go on with the passage list, or end at
        # once; the answer must start on that line.
        suppress = self.newline_ids + list(self.stop_token_ids) if plain else []
        return self._run(_Request(ids, budget, options, adapter, cancel or CancelToken(), suppress))

    def _acquire(self, cancel: CancelToken) -> None:
        """The model lock, unless the request is cancelled while it waits its turn."""
        while not self._lock.acquire(timeout=POLL_S):
            cancel.check()
        if cancel.cancelled:
            self._lock.release()
            raise GenerationCancelled()

    def _run(self, request: _Request) -> Iterator[str | Generation]:
        """Text deltas as the worker thread's tokens arrive, then the Generation; the model lock is held from the
        request's turn until the worker's generate() returns."""
        timer = Timer()  # from before the wait for the model: the caller waits for it too
        worker = _Worker()
        self._acquire(request.cancel)
        self._start_worker(worker, request)
        stops = StopTextFilter(request.options.stop)
        generated: list[int] = []
        try:
            yield from self._deltas(worker, request.cancel, timer, stops, generated)
            worker.thread.join()
            request.cancel.check()
            if worker.error is not None:
                raise worker.error
            tail = stops.flush()
            if tail:
                yield tail
            yield self._generation(request, worker, generated, stops, timer)
        finally:
            worker.finished.set()  # a consumer that stops reading early frees the model at the next token

    def _start_worker(self, worker: _Worker, request: _Request) -> None:
        worker.thread = threading.Thread(target=self._work, args=(worker, request), name="embedded-generate",
                                         daemon=True)
        try:
            worker.thread.start()
        except BaseException:
            self._lock.release()
            raise

    def _work(self, worker: _Worker, request: _Request) -> None:
        """The worker thread: generate, hand back the ids or the error, free the model, then say it is done."""
        try:
            worker.output_ids = self._generate_ids(worker, request)
        except BaseException as exc:  # handed to the consumer thread
            worker.error = exc
        finally:
            self._lock.release()
            worker.tokens.put(_DONE)

    def _generate_ids(self, worker: _Worker, request: _Request) -> list[int]:
        import torch  # heavy optional library: loaded with the engine, not with ragtune
        from transformers import LogitsProcessorList, StoppingCriteriaList

        options, n_prompt = request.options, len(request.ids)
        config = _generation_config(options, request.budget, self.stop_token_ids, self.tokenizer,
                                    request.suppress_first)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        penalties = LogitsProcessorList(
            [AnswerFrequencyPenalty(n_prompt, options.frequency_penalty)] if options.frequency_penalty else [])
        stop = _StopWhen(self.tokenizer, n_prompt, StopTextFilter(options.stop).stops, worker.finished,
                         request.cancel)
        with torch.inference_mode(), self._adapter_switch(request.adapter):
            out = self.model.generate(input_ids=torch.tensor([request.ids], device=self.device),
                                      attention_mask=torch.ones(1, n_prompt, dtype=torch.long, device=self.device),
                                      generation_config=config, streamer=_QueueStreamer(worker.tokens),
                                      stopping_criteria=StoppingCriteriaList([stop]), logits_processor=penalties)
        return out[0, n_prompt:].tolist()

    def _adapter_switch(self, adapter: str | None):
        """The model answering as `adapter`, or as the base model (peft's adapters off) when it is None."""
        if adapter is None:
            return self.model.disable_adapter() if self._adapters else nullcontext()
        if adapter not in self._adapters:  # unloaded between the request and its turn
            raise self._unknown_adapter(adapter)
        self.model.set_adapter(adapter)
        return nullcontext()

    def _deltas(self, worker: _Worker, cancel: CancelToken, timer: Timer, stops: StopTextFilter,
                generated: list[int]) -> Iterator[str]:
        """The answer's text, a delta per token, cut at a stop string; every token id lands in `generated`."""
        decoder = IncrementalDecoder(self.tokenizer)
        for token in _queued_tokens(worker.tokens, cancel):
            timer.mark_first()
            generated.append(token)
            if token in self.stop_token_ids:
                continue
            out = stops.feed(decoder.push(token))
            if out:
                yield out

    def _generation(self, request: _Request, worker: _Worker, generated: list[int], stops: StopTextFilter,
                    timer: Timer) -> Generation:
        n_out = len(worker.output_ids if worker.output_ids is not None else generated)
        ended = bool(generated) and generated[-1] in self.stop_token_ids
        ttft, latency = timer.finish()
        return Generation(text=stops.text, prompt_tokens=len(request.ids), completion_tokens=n_out, ttft_s=ttft,
                          latency_s=latency, finish_reason="stop" if ended or stops.stopped else "length",
                          model=self.model_name, adapter=request.adapter)

    def close(self) -> None:
        self.model = None
        self._adapters.clear()

    def __repr__(self) -> str:
        return f"EmbeddedEngine({self.model_name!r}, dtype={self.dtype!r})"


def _stop_token_ids(tokenizer, model) -> list[int]:
    """End of sequence plus the chat template's end-of-turn marker (Gemma's config lists only <eos>)."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for tid in ([configured] if isinstance(configured, int) else list(configured or [])) + [tokenizer.eos_token_id]:
        if tid is not None and tid not in ids:
            ids.append(tid)
    turn_end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(turn_end, int) and turn_end != tokenizer.unk_token_id and turn_end not in ids:
        ids.append(turn_end)
    return ids


@dataclass
class _Request:
    """One generation as the engine runs it: prompt ids, the answer's token budget and how to sample it."""
    ids: list[int]
    budget: int
    options: SamplingOptions
    adapter: str | None
    cancel: CancelToken
    suppress_first: list[int]  # token ids the answer may not open with (a plain prompt's new lines and ends)


@dataclass
class _Worker:
    """The thread that runs transformers' generate(): token ids come out through `tokens`, then _DONE."""
    tokens: queue.Queue = field(default_factory=queue.Queue)
    finished: threading.Event = field(default_factory=threading.Event)  # the consumer stopped reading
    thread: threading.Thread | None = None
    output_ids: list[int] | None = None  # the answer's ids once generate() returned
    error: BaseException | None = None  # what generate() raised, re-raised in the consumer's thread


class _QueueStreamer:
    """transformers' streamer: called once with the prompt (skipped), then with each new token, queued."""

    def __init__(self, tokens: queue.Queue):
        self.tokens = tokens
        self.seen_prompt = False

    def put(self, value) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.put(token)

    def end(self) -> None:
        pass


class _StopWhen:
    """transformers' stopping criterion: the consumer went away, the request was cancelled, or a stop string
    appeared in the answer's last tokens."""

    def __init__(self, tokenizer, n_prompt: int, stop_texts: list[str], finished: threading.Event,
                 cancel: CancelToken):
        self.tokenizer, self.n_prompt, self.stop_texts = tokenizer, n_prompt, stop_texts
        self.finished, self.cancel = finished, cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch  # heavy optional library: loaded with the engine, not with ragtune

        stop = self.finished.is_set() or self.cancel.cancelled or self._stop_text_in_tail(input_ids)
        return (torch.ones if stop else torch.zeros)(input_ids.shape[0], dtype=torch.bool)

    def _stop_text_in_tail(self, input_ids) -> bool:
        if not self.stop_texts:
            return False
        tail = self.tokenizer.decode(input_ids[0, self.n_prompt:][-32:], skip_special_tokens=True)
        return any(s in tail for s in self.stop_texts)


def _queued_tokens(tokens: queue.Queue, cancel: CancelToken) -> Iterator[int]:
    """The worker's token ids until it is done, looking at the cancel token while it waits."""
    while True:
        try:
            item = tokens.get(timeout=POLL_S)
        except queue.Empty:
            cancel.check()
            continue
        if item is _DONE:
            return
        cancel.check()
        yield item


def _generation_config(options: SamplingOptions, budget: int, stop_token_ids: list[int], tokenizer,
                       suppress_first: list[int] | None):
    """transformers' GenerationConfig for these options; settings left at their default stay unset."""
    from transformers import GenerationConfig  # heavy optional library: loaded with the engine

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
    return GenerationConfig(
        max_new_tokens=budget, do_sample=not options.greedy, eos_token_id=stop_token_ids, pad_token_id=pad,
        bos_token_id=tokenizer.bos_token_id,
        **({"repetition_penalty": float(options.repetition_penalty)} if options.repetition_penalty != 1.0 else {}),
        **({"no_repeat_ngram_size": options.no_repeat_ngram_size} if options.no_repeat_ngram_size else {}),
        **({"begin_suppress_tokens": suppress_first} if suppress_first else {}),
        **({} if options.greedy else {"temperature": float(options.temperature), "top_p": float(options.top_p),
                                      "top_k": 0}),
    )
