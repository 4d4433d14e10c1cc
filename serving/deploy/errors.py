"""Every error the deploy server answers, in OpenAI's shape, whatever raised it (404 and 405 included)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune.errors import BadInputError, RagtuneError, ServerUnavailableError
from serving.openai_format import RequestError, error_body

HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 411: "length_required", 413: "request_too_large",
              415: "unsupported_media_type", 421: "unknown_host", 429: "rate_limit_exceeded",
              500: "internal_error", 501: "not_implemented", 503: "service_unavailable"}


class ApiError(Exception):
    """An HTTP error with OpenAI's fields: `code` is a short string, `param` the request field at fault."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.param = status, message, headers or {}, param
        self.code = code or HTTP_CODES.get(status, str(status))


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code or HTTP_CODES.get(status, str(status)), param),
                        status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestError)
    async def _request_error(_request, exc: RequestError):
        return error_response(400, str(exc), exc.code, exc.param)

    @app.exception_handler(BadInputError)
    async def _bad_input(_request, exc: BadInputError):
        return error_response(400, str(exc), "invalid_request")

    @app.exception_handler(RagtuneError)
    async def _ragtune_error(_request, exc: RagtuneError):
        if isinstance(exc, ServerUnavailableError):
            return error_response(503, str(exc), "service_unavailable")
        return error_response(400, str(exc), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"No such route: {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        err = (exc.errors() or [{}])[0]
        param = ".".join(str(p) for p in err.get("loc", ())[1:]) or None
        return error_response(400, f"Invalid value for '{param}': {err.get('msg', 'invalid')}.", "invalid_value",
                              param)
