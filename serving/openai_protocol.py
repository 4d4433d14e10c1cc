"""The OpenAI chat-completions wire format, in one place: the request model, answers, stream chunks, errors.

Both servers speak it: ``serving.openai_api`` (variants by ``model``) and the deploy server
(``serving.deploy``). Every field of a request is checked here (types, ranges, seed), and every
error has OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a string code.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator

from ragtune.errors import BadInputError

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
DONE_EVENT = "data: [DONE]\n\n"

Number = Annotated[float, Field(strict=True)]  # a JSON number; "0.5" (a string) is refused


class RequestError(BadInputError):
    """A 400 that names the request field at fault (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class RagtuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: Annotated[StrictInt, Field(ge=1, le=50)] | None = None


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat-completions request as ragtune accepts it.

    Unknown fields are ignored, as OpenAI-compatible servers do; known ones must be right:
    ``"stream": "false"`` (a string) or ``max_tokens: 0`` is a 400, not a guess.
    """

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] = 1
    seed: Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    logprobs: Literal[False] | None = None
    user: Annotated[StrictStr, Field(max_length=256)] | None = None
    tools: Annotated[list, Field(max_length=0)] | None = None
    # ragtune's own fields
    conversation_id: Annotated[StrictStr, Field(max_length=64)] | None = None
    ragtune: RagtuneOptions | None = None

    @field_validator("messages")
    @classmethod
    def _messages(cls, messages):
        from .engine import check_messages

        try:
            check_messages(messages)  # roles and text content, with a sentence a user can act on
        except BadInputError as exc:
            raise ValueError(str(exc)) from None
        return messages

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampling(self, max_tokens: int):
        from .engine import SamplingOptions

        return SamplingOptions(max_tokens=max_tokens,
                               temperature=0.0 if self.temperature is None else float(self.temperature),
                               top_p=1.0 if self.top_p is None else float(self.top_p),
                               stop=self.stop, seed=self.seed,
                               **({} if self.frequency_penalty is None
                                  else {"frequency_penalty": float(self.frequency_penalty)}))


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; the first problem becomes a RequestError naming its field."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> RequestError:
    err = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith(("function-", "constrained-")))
    param = param.split(".int", 1)[0].split(".str", 1)[0].split(".list", 1)[0] or None
    kind = err.get("type", "")
    if kind == "missing":
        return RequestError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind == "value_error":
        return RequestError(str(err.get("ctx", {}).get("error") or err.get("msg")), param, "invalid_value")
    code = "invalid_type" if kind.endswith("_type") or kind in ("int_from_float", "literal_error") else "invalid_value"
    given = err.get("input")
    shown = json.dumps(given)[:60] if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    return RequestError(f"Invalid value for '{param}' ({shown}): {err.get('msg', 'invalid')}.", param, code)


# ------------------------------------------------------------------ errors

def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def error_body(status: int, message: str, code: str | None = None, param: str | None = None,
               type_: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_ or error_type(status), "param": param,
                      "code": code or str(status)}}


def error_event(status: int, message: str, code: str | None = None) -> str:
    """An error inside a stream that has already started (then ``[DONE]``)."""
    return sse(error_body(status, message, code))


# ------------------------------------------------------------------ answers

def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, default=str)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class CompletionFormat:
    """One answer's ``chat.completion`` body or its ``chat.completion.chunk`` events (same id and model)."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def completion(self, text: str, finish_reason: str | None, prompt_tokens: int, completion_tokens: int,
                   **extra) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason or "stop", "logprobs": None}],
                "usage": usage(prompt_tokens, completion_tokens), **extra}

    def chunk(self, delta: dict | None, finish_reason: str | None = None, **extra) -> str:
        """An SSE event; ``delta=None`` gives the usage-only chunk (no choices)."""
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                            "logprobs": None}]
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": choices, **extra})

    def first_chunk(self) -> str:
        return self.chunk({"role": "assistant", "content": ""})
