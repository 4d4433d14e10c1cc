"""The OpenAI chat-completions protocol as ragtune speaks it: every request, response, chunk and error body.

One module, as vLLM's ``entrypoints/openai/protocol.py``: both servers (``ragtune serve`` and the deploy
server) read their bodies into these models and write their answers from them, so a field is named, typed
and checked once. A request field that is known must be right (``"stream": "false"`` or ``max_tokens: 0`` is
a 400 naming it, not a guess); unknown fields are ignored, as OpenAI-compatible servers do. Every error has
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with a code from ``ErrorCode``.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator,
                      model_serializer)

from ragtune.errors import BadInputError

from .engine import SamplingOptions, check_messages

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

Number = Annotated[float, Field(strict=True)]  # a JSON number; "0.5" (a string) is refused


class ErrorCode(str, enum.Enum):
    """Every ``error.code`` either server answers: one name per cause, the same in both servers."""

    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    INVALID_VALUE = "invalid_value"
    INVALID_TYPE = "invalid_type"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    TOO_MANY_MESSAGES = "too_many_messages"
    PROMPT_TOO_LONG = "prompt_too_long"
    EMPTY_QUESTION = "empty_question"
    UPLOAD_REFUSED = "upload_refused"
    UNAUTHORIZED = "unauthorized"
    INVALID_API_KEY = "invalid_api_key"
    SESSION_EXPIRED = "session_expired"
    BUILDER_AUTH_REQUIRED = "builder_auth_required"
    FORBIDDEN = "forbidden"
    PERMISSION_DENIED = "permission_denied"
    CROSS_SITE_REQUEST = "cross_site_request"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    LENGTH_REQUIRED = "length_required"
    REQUEST_TOO_LARGE = "request_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNKNOWN_HOST = "unknown_host"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    LOGIN_THROTTLED = "login_throttled"
    CANCELLED = "cancelled"  # 499: the client went away before the answer
    INTERNAL_ERROR = "internal_error"
    NOT_IMPLEMENTED = "not_implemented"
    SERVICE_UNAVAILABLE = "service_unavailable"  # the model's backend is down or not healthy
    NOT_PUBLISHED = "not_published"
    NOT_STARTED = "not_started"

    @classmethod
    def for_status(cls, status: int) -> "ErrorCode":
        """The code of an error that has no more specific cause than its HTTP status."""
        return _STATUS_CODES.get(status) or (cls.INTERNAL_ERROR if status >= 500 else cls.INVALID_REQUEST)

    def __str__(self) -> str:
        return self.value


_STATUS_CODES = {400: ErrorCode.INVALID_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
                 404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 411: ErrorCode.LENGTH_REQUIRED,
                 413: ErrorCode.REQUEST_TOO_LARGE, 415: ErrorCode.UNSUPPORTED_MEDIA_TYPE, 421: ErrorCode.UNKNOWN_HOST,
                 429: ErrorCode.RATE_LIMIT_EXCEEDED, 499: ErrorCode.CANCELLED, 500: ErrorCode.INTERNAL_ERROR,
                 501: ErrorCode.NOT_IMPLEMENTED, 503: ErrorCode.SERVICE_UNAVAILABLE}


class RequestError(BadInputError):
    """A 400 that names the request field at fault (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None, code: ErrorCode = ErrorCode.INVALID_VALUE):
        super().__init__(message)
        self.param, self.code = param, code


# ------------------------------------------------------------------ bodies

class WireModel(BaseModel):
    """A body ragtune writes: ``dump()`` leaves out the optional fields named in ``omit_when_none`` when
    they are empty (a delta without role, a chunk without usage), and keeps every other null (OpenAI's
    ``logprobs: null``, ``param: null``)."""

    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler):
        body = handler(self)
        for name in self.omit_when_none:
            if body.get(name) is None:
                body.pop(name, None)
        return body

    def dump(self) -> dict:
        return self.model_dump(mode="json", fallback=str)  # as json.dumps(default=str): a numpy score stays readable


class ErrorInfo(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorResponse(WireModel):
    error: ErrorInfo

    @classmethod
    def of(cls, status: int, message: str, code: ErrorCode | None = None, param: str | None = None) -> "ErrorResponse":
        return cls(error=ErrorInfo(message=message, type=error_type(status), param=param,
                                   code=str(code or ErrorCode.for_status(status))))


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


class UsageInfo(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "UsageInfo":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class ChatMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(WireModel):
    index: int = 0
    message: ChatMessage
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletionResponse(WireModel):
    """A whole answer; ``ragtune`` carries the citations, passages, timings and (deploy) the message id."""

    omit_when_none = frozenset({"ragtune"})
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    ragtune: dict[str, Any] | None = None


class DeltaMessage(WireModel):
    omit_when_none = frozenset({"role", "content"})
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(WireModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(WireModel):
    """One streamed event; the last one with a ``finish_reason`` also carries ``usage`` and ``ragtune``, and
    ``stream_options.include_usage`` adds OpenAI's usage-only chunk (no choices) after it."""

    omit_when_none = frozenset({"usage", "ragtune"})
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: UsageInfo | None = None
    ragtune: dict[str, Any] | None = None


class ModelCard(WireModel):
    omit_when_none = frozenset({"root", "ragtune"})
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    root: str | None = None  # ``ragtune serve``: the base model every variant runs on
    ragtune: dict[str, Any] | None = None  # the deploy server: the live deployment


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthReport(WireModel):
    """GET /health: ``ragtune serve`` also names its engine, model and workspace; a deploy server says only ok."""

    omit_when_none = frozenset({"ragtune", "engine", "model", "workspace"})

    status: Literal["ok", "unavailable"]
    ragtune: str | None = None
    engine: str | None = None
    model: str | None = None
    workspace: str | None = None


class UploadAccepted(WireModel):
    """202 of POST /builder/<ws>/documents: the ingest job that parses and stores the checked files."""

    job: str
    status: str
    follow: str  # the job route to poll
    files: list[str]  # the names the files are stored under
    index: str | None  # when the index is rebuilt, if asked for


class JobView(WireModel):
    """GET /builder/<ws>/jobs/<id>: a job's record and its progress (``ragtune.job_events.JobProgress``)."""

    id: str
    kind: str
    status: str
    error: str | None
    result: dict | None
    done: int
    total: int
    label: str
    rate: float | None
    eta_s: float | None


class CompletionIds:
    """The id, creation time and model one answer's body or chunks share."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def completion(self, text: str, finish_reason: str | None, usage: UsageInfo,
                   ragtune: dict | None = None) -> ChatCompletionResponse:
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, usage=usage,
                                      ragtune=ragtune,
                                      choices=[ChatCompletionChoice(message=ChatMessage(content=text),
                                                                    finish_reason=finish_reason or "stop")])

    def chunk(self, delta: DeltaMessage | None, finish_reason: str | None = None, *, usage: UsageInfo | None = None,
              ragtune: dict | None = None) -> ChatCompletionChunk:
        """``delta=None`` gives the usage-only chunk (no choices)."""
        choices = [] if delta is None else [ChatCompletionChunkChoice(delta=delta, finish_reason=finish_reason)]
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices,
                                   usage=usage, ragtune=ragtune)


# ------------------------------------------------------------------ requests

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class RagtuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: Annotated[StrictInt, Field(ge=1, le=50)] | None = None


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat-completions request as ragtune accepts it (both servers)."""

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
        try:
            check_messages(messages)  # roles and text content, with a sentence a user can act on
        except BadInputError as exc:
            raise ValueError(str(exc)) from None
        return messages

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self, max_tokens: int) -> SamplingOptions:
        return SamplingOptions(max_tokens=max_tokens,
                               temperature=0.0 if self.temperature is None else float(self.temperature),
                               top_p=1.0 if self.top_p is None else float(self.top_p),
                               stop=self.stop, seed=self.seed,
                               **({} if self.frequency_penalty is None
                                  else {"frequency_penalty": float(self.frequency_penalty)}))


class FeedbackRequest(BaseModel):
    """A rating and/or a correction of an earlier answer, named by the ``message_id`` its ``ragtune`` field gave.
    The lengths and "at least one of them" are the feedback store's rules (``ragtune.feedback``)."""

    model_config = ConfigDict(extra="ignore")

    message_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    rating: Literal["up", "down"] | StrictBool | None = None  # true / false: the page's thumbs
    correction: StrictStr | None = None
    comment: StrictStr | None = None

    @property
    def rating_name(self) -> str | None:
        if isinstance(self.rating, bool):
            return "up" if self.rating else "down"
        return self.rating


Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], body: Any) -> Body:
    """Validate a decoded JSON body; the first problem becomes a RequestError naming its field."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.", code=ErrorCode.INVALID_JSON)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, body)


_TYPE_TAGS = frozenset({"int", "str", "bool", "float", "list", "dict", "none"})


def _param(loc) -> str | None:
    """The field a pydantic error location names, without the union member tags (``stop.list[str].0`` -> stop)."""
    names = []
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isidentifier() and part not in _TYPE_TAGS):
            names.append(str(part))
        else:
            break
    return ".".join(names) or None


def validation_error(exc: ValidationError) -> RequestError:
    err = exc.errors(include_url=False)[0]
    param = _param(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "missing":
        return RequestError(f"Missing required parameter: '{param}'.", param, ErrorCode.MISSING_REQUIRED_PARAMETER)
    if kind == "value_error":
        return RequestError(str(err.get("ctx", {}).get("error") or err.get("msg")), param, ErrorCode.INVALID_VALUE)
    wrong_type = kind.endswith("_type") or kind in ("int_from_float", "literal_error")
    given = err.get("input")
    shown = json.dumps(given)[:60] if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    return RequestError(f"Invalid value for '{param}' ({shown}): {err.get('msg', 'invalid')}.", param,
                        ErrorCode.INVALID_TYPE if wrong_type else ErrorCode.INVALID_VALUE)
