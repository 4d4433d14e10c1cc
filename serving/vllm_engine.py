"""vLLM as ragtune's serving engine: one base model, LoRA adapters loaded at run time.

``VLLMEngine`` talks to a vLLM server ragtune started (``serving.vllm_process.VLLMServer``, which
restarts it when it dies), or to any vLLM server at a URL: answers through the ``openai`` client,
vLLM's own routes (tokenize, LoRA loading) over httpx. A cancelled answer closes its stream, which
makes vLLM abort the request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import openai

from ragtune.errors import BadInputError, ServerUnavailableError
from ragtune.models import resolve_llm

from .engine import (BaseEngine, CancelToken, Generation, GenerationCancelled, Message, SamplingOptions,
                     StopTextFilter, Timer, check_messages, completion_budget, too_long_error)
from .plain_prompt import newline_token_ids, render_plain
from .vllm_process import DEFAULT_MAX_MODEL_LEN, VLLMServer, log_tail


def _stream_transport_errors() -> tuple[type[Exception], ...]:
    """What a broken connection raises while a stream is read: the HTTP library's own error, from httpx, or
    from httpx2 where the installed openai is built on it."""
    errors: list[type[Exception]] = [httpx.HTTPError]
    try:
        import httpx2
    except ImportError:
        return tuple(errors)
    return (*errors, httpx2.HTTPError)


STREAM_TRANSPORT_ERRORS = _stream_transport_errors()


@dataclass
class _FirstToken:
    token_ids: list[int]
    text: str
    finish_reason: str  # "length": the answer goes on; "stop": it ended at this token


def _served_plain(name: str) -> bool:
    """Whether a server started elsewhere serves a base model ragtune prompts as plain text."""
    try:
        return resolve_llm(name, progress=False).plain_prompts
    except Exception:  # a name only that server knows: assume it brings its own chat template
        return False


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    return exc.message or f"HTTP {exc.status_code}"


class VLLMEngine(BaseEngine):
    """The Engine interface over a vLLM server: one ragtune started, or one already running at a URL."""

    kind = "vllm"

    def __init__(self, server_or_url: VLLMServer | str, *, request_timeout: float = 600.0):
        if isinstance(server_or_url, VLLMServer):
            self.server: VLLMServer | None = server_or_url
            self.url = self.server.url
        else:
            self.server = None
            self.url = str(server_or_url).rstrip("/")
            if self.url.endswith("/v1"):
                self.url = self.url[:-3]
        self._http = httpx.Client(timeout=httpx.Timeout(request_timeout, connect=5.0))
        # openai's own Timeout: the client is built on httpx or, from openai 3.6x, on httpx2, which refuses
        # the other library's objects ("Invalid timeout ... got <class 'httpx.Timeout'>").
        self._openai = openai.OpenAI(base_url=self.url + "/v1", api_key="EMPTY", max_retries=0,
                                     timeout=openai.Timeout(request_timeout, connect=5.0))
        self._adapters: dict[str, str] = {}
        self._adapter_lock = threading.RLock()
        self._seen_starts = self.server.starts if self.server else 0
        card = self._model_card()
        self.model_name = card["id"]
        root = card.get("root")
        self.model_path = Path(root) if root and Path(root).exists() else getattr(self.server, "model_path", None)
        self.max_model_len = int(card.get("max_model_len") or DEFAULT_MAX_MODEL_LEN)
        self.stop_token_ids = self._end_of_turn_ids()
        self.plain_prompts = self.server.plain_prompts if self.server else _served_plain(self.model_name)
        # A plain prompt's answer may not open with a new line (serving.plain_prompt); the embedded engine
        # forbids it at the first position only, which vLLM's per-request options cannot say: see _first_token.
        self.newline_ids, self._eos_ids = self._newline_and_eos_ids() if self.plain_prompts else ([], [])

    # ------------------------------------------------------------ HTTP plumbing
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One HTTP call; a dead server ragtune owns is restarted (and its adapters reloaded) once."""
        for attempt in (0, 1):
            self._sync_after_restart()
            try:
                return self._http.request(method, self.url + path, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == 0 and self._recover():
                    continue
                raise self._unavailable(exc) from None
            except httpx.TimeoutException as exc:
                raise ServerUnavailableError(f"The vLLM server at {self.url} timed out ({type(exc).__name__}).") from None
        raise AssertionError("unreachable")

    def _recover(self) -> bool:
        if self.server is None:
            return False
        restarted = self.server.ensure_running()
        self._sync_after_restart()
        return restarted or self.server.alive()

    def _sync_after_restart(self) -> None:
        if self.server is None or self.server.starts == self._seen_starts:
            return
        with self._adapter_lock:
            if self.server.starts == self._seen_starts:
                return
            self._seen_starts = self.server.starts
            for name, path in list(self._adapters.items()):
                self._post_load(name, path, inplace=False)

    def _unavailable(self, exc: Exception) -> ServerUnavailableError:
        where = f"The vLLM server at {self.url}"
        if self.server is None:
            return ServerUnavailableError(f"{where} is not answering ({type(exc).__name__}). Start it, or check the "
                                          "--url; without --url ragtune starts its own.")
        return ServerUnavailableError(f"{where} stopped and could not be restarted ({type(exc).__name__}). "
                                      f"Log: {self.server.log_path}\n{log_tail(self.server.log_path, 1500)}")

    @staticmethod
    def _error_message(r: httpx.Response) -> str:
        try:
            body = r.json()
            err = body.get("error", body) if isinstance(body, dict) else body
            return err.get("message") or json.dumps(err) if isinstance(err, dict) else str(err)
        except ValueError:
            return r.text[:500] or f"HTTP {r.status_code}"

    def _model_card(self) -> dict:
        r = self._request("GET", "/v1/models")
        if r.status_code != 200:
            raise ServerUnavailableError(f"{self.url} is not an OpenAI-compatible server (GET /v1/models: "
                                         f"HTTP {r.status_code}).")
        cards = [c for c in r.json().get("data", []) if not c.get("parent")]
        if not cards:
            raise ServerUnavailableError(f"The server at {self.url} serves no model.")
        return cards[0]

    def _end_of_turn_ids(self) -> list[int]:
        # Gemma's generation config ends on <eos> only; chat turns end with <end_of_turn>.
        ids = self._tokenize({"prompt": "<end_of_turn>", "add_special_tokens": False})
        return ids if ids and len(ids) == 1 else []

    def _newline_and_eos_ids(self) -> tuple[list[int], list[int]]:
        if self.model_path is None:
            return [], []
        from transformers import AutoTokenizer  # heavy optional library: only for a base model's plain prompts

        tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        return newline_token_ids(tokenizer), [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def _tokenize(self, payload: dict) -> list[int] | None:
        r = self._request("POST", "/tokenize", json={"model": self.model_name, **payload})
        if r.status_code != 200:
            return None
        return r.json().get("tokens")

    # ------------------------------------------------------------ Engine interface
    def count_tokens(self, text: str) -> int:
        tokens = self._tokenize({"prompt": text, "add_special_tokens": False})
        if tokens is None:
            return max(1, len(text) // 4)  # servers without /tokenize: a rough bound keeps prompts in budget
        return len(tokens)

    def prompt_ids(self, messages: list[Message], plain: bool = False) -> list[int] | None:
        return self._tokenize({"prompt": render_plain(messages), "add_special_tokens": True} if plain
                              else {"messages": messages, "add_generation_prompt": True})

    def prompt_tokens(self, messages: list[Message], plain: bool = False) -> int | None:
        ids = self.prompt_ids(messages, plain)
        return None if ids is None else len(ids)

    def load_adapter(self, name: str, path: str | Path) -> None:
        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise BadInputError(f"No LoRA adapter at {path} (adapter_config.json is missing).")
        with self._adapter_lock:
            self._post_load(name, str(path.resolve()), inplace=name in self._adapters)
            self._adapters[name] = str(path.resolve())

    def _post_load(self, name: str, path: str, inplace: bool) -> None:
        r = self._request("POST", "/v1/load_lora_adapter",
                          json={"lora_name": name, "lora_path": path, "load_inplace": inplace})
        if r.status_code == 200:
            return
        if r.status_code == 404 and "does not exist" not in r.text and "not found" not in r.text.lower():
            raise BadInputError(f"The vLLM server at {self.url} does not load adapters at run time: start it with "
                                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.")
        message = self._error_message(r)
        if "already been loaded" in message:
            return
        raise BadInputError(f"vLLM could not load the adapter '{name}' from {path}: {message}")

    def unload_adapter(self, name: str) -> None:
        with self._adapter_lock:
            r = self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
            self._adapters.pop(name, None)
        if r.status_code != 200:
            raise BadInputError(f"Unknown adapter '{name}' on the vLLM server: {self._error_message(r)}")

    def adapters(self) -> list[str]:
        self._sync_after_restart()
        return list(self._adapters)

    def adapter_path(self, name: str) -> str | None:
        return self._adapters.get(name)

    def healthy(self) -> bool:
        try:
            return self._http.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stream(self, messages: list[Message], options: SamplingOptions | None = None,
               adapter: str | None = None, cancel: CancelToken | None = None,
               plain: bool = False) -> Iterator[str | Generation]:
        options = options or SamplingOptions()
        if options.no_repeat_ngram_size:
            raise BadInputError("no_repeat_ngram_size (n-gram blocking) is not offered by vLLM's server: "
                                "use the embedded engine for it, or frequency_penalty.")
        timer = Timer()
        messages = check_messages(messages, open_answer=plain)
        ids = self.prompt_ids(messages, plain=plain)
        n_prompt = None if ids is None else len(ids)
        max_tokens = options.max_tokens if n_prompt is None else completion_budget(n_prompt, options.max_tokens,
                                                                                    self.max_model_len)
        # A plain prompt goes to /v1/completions (as its token ids where known); chat messages through the
        # chat template. Stops of a plain prompt are applied here, as the embedded engine applies them.
        prompt = {"prompt": ids or render_plain(messages)} if plain else {"messages": messages}
        request = {"model": adapter or self.model_name, **prompt, "max_tokens": max_tokens,
                   "temperature": float(options.temperature), "top_p": float(options.top_p), "stream": True,
                   "stream_options": {"include_usage": True}}
        client_stops = StopTextFilter(options.stop) if plain else None
        if options.stop and not plain:
            request["stop"] = options.stop
        if options.seed is not None:
            request["seed"] = options.seed
        if options.frequency_penalty:
            request["frequency_penalty"] = float(options.frequency_penalty)
        extra = {"stop_token_ids": self.stop_token_ids} if self.stop_token_ids else {}
        if options.repetition_penalty != 1.0:
            extra["repetition_penalty"] = float(options.repetition_penalty)
        if extra:
            request["extra_body"] = extra
        cancel = cancel or CancelToken()
        cancel.check()
        first = None
        if plain and ids and self.newline_ids:
            first = self._first_token(request, adapter, n_prompt)
            if not first.token_ids:  # a server that does not return token ids: no first-token request
                first = None
            elif first.finish_reason != "length" or max_tokens <= 1:  # the answer ended at its first token
                return self._one_token_answer(first, adapter, n_prompt, timer, client_stops)
            else:
                request.update(prompt=ids + first.token_ids, max_tokens=max_tokens - 1)
                if options.frequency_penalty:
                    # The first token is prompt now, which vLLM's penalty does not count: it adds one to that
                    # token's count at every later position, which a constant bias of -penalty says exactly.
                    request["logit_bias"] = {str(t): -float(options.frequency_penalty) for t in first.token_ids}
        if client_stops is not None:  # stopped here, the stream ends before its usage: count what came
            request["extra_body"] = {**request.get("extra_body", {}), "return_token_ids": True}
        stream = self._open_stream(request, adapter, n_prompt)
        cancel.on_cancel(stream.close)  # vLLM aborts a request whose connection closes
        return self._read_stream(stream, adapter, n_prompt, timer, cancel, client_stops, first)

    def _first_token(self, request: dict, adapter: str | None, n_prompt: int | None) -> "_FirstToken":
        """The answer's first token with new lines and ends forbidden, as the embedded engine's
        ``begin_suppress_tokens`` does. vLLM's ``logit_bias`` holds for every position of a request, so the
        first token is asked alone (greedy or sampled as the request says) and the rest continues from it."""
        one = {k: v for k, v in request.items() if k != "stream_options"}
        forbidden = {*self.newline_ids, *self._eos_ids, *self.stop_token_ids}  # as the embedded engine forbids
        one.update(stream=False, max_tokens=1, logit_bias={str(i): -100 for i in sorted(forbidden)},
                   extra_body={**request.get("extra_body", {}), "return_token_ids": True})
        choice = self._open_stream(one, adapter, n_prompt).choices[0]
        token_ids = list(getattr(choice, "token_ids", None) or (choice.model_extra or {}).get("token_ids") or [])
        return _FirstToken(token_ids, choice.text or "", choice.finish_reason or "stop")

    def _one_token_answer(self, first: "_FirstToken", adapter, n_prompt, timer: Timer, client_stops):
        text = client_stops.feed(first.text) + client_stops.flush() if client_stops is not None else first.text
        if text:
            timer.mark_first()
            yield text
        ttft, latency = timer.finish()
        yield Generation(text=text, prompt_tokens=n_prompt or 0, completion_tokens=len(first.token_ids), ttft_s=ttft,
                         latency_s=latency, finish_reason=first.finish_reason, model=self.model_name, adapter=adapter)

    def _open_stream(self, request: dict, adapter: str | None, n_prompt: int | None) -> openai.Stream:
        for attempt in (0, 1):
            self._sync_after_restart()
            try:
                if "prompt" in request:
                    return self._openai.completions.create(**request)
                return self._openai.chat.completions.create(**request)
            except openai.APITimeoutError:
                raise ServerUnavailableError(f"The vLLM server at {self.url} timed out.") from None
            except openai.APIConnectionError as exc:
                if attempt == 0 and self._recover():
                    continue
                raise self._unavailable(exc) from None
            except openai.APIStatusError as exc:
                message = _status_message(exc)
                if exc.status_code == 404 and adapter:
                    if adapter in self._adapters and attempt == 0:  # the server lost it (restarted elsewhere)
                        with self._adapter_lock:
                            self._post_load(adapter, self._adapters[adapter], inplace=False)
                        continue
                    known = ", ".join(self._adapters) or "none"
                    raise BadInputError(f"Unknown adapter '{adapter}' on the vLLM server (loaded: {known}).") from None
                if exc.status_code == 400 and ("context length" in message or "max_model_len" in message
                                               or "too long" in message):
                    raise (too_long_error(n_prompt or 0, self.max_model_len) if n_prompt
                           else BadInputError(message)) from None
                if exc.status_code >= 500:
                    raise ServerUnavailableError(f"The vLLM server failed (HTTP {exc.status_code}): {message}") from None
                raise BadInputError(f"vLLM refused the request: {message}") from None
        raise AssertionError("unreachable")

    def _read_stream(self, stream: openai.Stream, adapter: str | None, n_prompt: int | None, timer: Timer,
                     cancel: CancelToken, client_stops: StopTextFilter | None = None,
                     first: "_FirstToken | None" = None):
        text, finish, usage, generated = [], None, None, 0
        if first is not None and first.text:  # asked on its own (_first_token): the answer opens with it
            delta = client_stops.feed(first.text) if client_stops is not None else first.text
            if delta:
                timer.mark_first()
                text.append(delta)
                yield delta
        try:
            for chunk in stream:
                cancel.check()
                if client_stops is not None and client_stops.stopped:
                    finish = "stop"
                    break  # closing the stream aborts the rest of the generation on the server
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    generated += len(getattr(choice, "token_ids", None) or ())
                    delta = (choice.delta.content if choice.delta else None) if hasattr(choice, "delta") \
                        else getattr(choice, "text", None)  # /v1/completions chunks carry text
                    if delta and client_stops is not None:
                        if not client_stops.text and first is None:  # no first-token request was possible
                            delta = delta.lstrip("\n")
                        delta = client_stops.feed(delta) if delta else ""
                    if delta:
                        timer.mark_first()
                        text.append(delta)
                        yield delta
                    finish = choice.finish_reason or finish
            cancel.check()  # a stream closed by the cancel ends early without an error
        except GenerationCancelled:
            raise
        except (openai.APIError, *STREAM_TRANSPORT_ERRORS, ValueError) as exc:
            if cancel.cancelled:
                raise GenerationCancelled() from None
            if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
                raise ServerUnavailableError(f"vLLM failed mid-answer: {exc.message}") from None  # an error event
            if self.server is not None:
                threading.Thread(target=self._recover, daemon=True).start()
            raise ServerUnavailableError(f"The vLLM server at {self.url} stopped mid-answer ({type(exc).__name__}); "
                                         "it is being restarted: ask again in a minute.") from None
        finally:
            stream.close()
        if client_stops is not None:
            tail = client_stops.flush()
            if tail:
                text.append(tail)
                yield tail
        n_out = (int(getattr(usage, "completion_tokens", 0) or 0) or generated
                 or (self.count_tokens("".join(text)) if text else 0))
        if first is not None:
            n_out += len(first.token_ids)
        ttft, latency = timer.finish()
        prompt_tokens = n_prompt if first is not None else int(getattr(usage, "prompt_tokens", 0) or n_prompt or 0)
        yield Generation(text="".join(text), prompt_tokens=prompt_tokens or 0, completion_tokens=n_out, ttft_s=ttft,
                         latency_s=latency, finish_reason=finish or "stop", model=self.model_name, adapter=adapter)

    def close(self) -> None:
        self._openai.close()
        self._http.close()
        if self.server is not None:
            self.server.stop()

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model_name!r}, url={self.url!r})"
