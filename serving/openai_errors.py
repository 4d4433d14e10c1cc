"""One error factory for both OpenAI servers: every failure, whatever raised it, becomes one ``ApiError``
and one OpenAI-shaped response (as vLLM's ``create_error_response``).

``error_for(exc)`` decides the status and code of any exception once: the exception handlers of the app
factory use it for errors before an answer starts, the stream encoder for an error inside a stream that
has started (an ``error`` event, then ``[DONE]``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune.errors import ModelNotFoundError, RagtuneError, ServerUnavailableError

from .engine import GenerationCancelled
from .openai_protocol import ErrorCode, ErrorResponse, RequestError

log = logging.getLogger("ragtune.serving")


class ApiError(Exception):
    """An HTTP error with OpenAI's fields: `code` names the cause, `param` the request field at fault."""

    def __init__(self, status: int, message: str, code: ErrorCode | None = None, headers: dict | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.param = status, message, headers or {}, param
        self.code = code or ErrorCode.for_status(status)

    def body(self) -> ErrorResponse:
        return ErrorResponse.of(self.status, self.message, self.code, self.param)


def error_for(exc: BaseException) -> ApiError:
    """The status, code and message of any exception. A RagtuneError's message is written for the user; any
    other exception is a bug whose text stays in the server's log."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestError):
        return ApiError(400, str(exc), exc.code, param=exc.param)
    if isinstance(exc, ServerUnavailableError):
        return ApiError(503, str(exc), ErrorCode.SERVICE_UNAVAILABLE)
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, str(exc), ErrorCode.MODEL_NOT_FOUND)
    if isinstance(exc, GenerationCancelled):  # the client went away: not a failure of the server
        return ApiError(499, "The client went away.", ErrorCode.CANCELLED)
    if isinstance(exc, RagtuneError):  # BadInputError and the rest: what the caller asked cannot be done
        return ApiError(400, str(exc), ErrorCode.INVALID_REQUEST)
    log.error("request failed (%s)", type(exc).__name__, exc_info=exc)
    return ApiError(500, f"The server failed ({type(exc).__name__}); the error was logged on the server.",
                    ErrorCode.INTERNAL_ERROR)


def create_error_response(status: int, message: str, code: ErrorCode | None = None, param: str | None = None,
                          headers: dict | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse.of(status, message, code, param).dump(), status_code=status, headers=headers)


def error_response(error: ApiError) -> JSONResponse:
    return create_error_response(error.status, error.message, error.code, error.param, error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error of `app` in OpenAI's shape: ours, FastAPI's validation, Starlette's 404 and 405, any bug."""

    @app.exception_handler(Exception)  # a bug: Starlette still logs it after this answer is sent
    @app.exception_handler(RagtuneError)
    @app.exception_handler(ApiError)
    async def _any(_request, exc):
        return error_response(error_for(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"No such route: {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        return create_error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        err = (exc.errors() or [{}])[0]
        param = ".".join(str(p) for p in err.get("loc", ())[1:]) or None
        return create_error_response(400, f"Invalid value for '{param}': {err.get('msg', 'invalid')}.",
                                     ErrorCode.INVALID_VALUE, param)

