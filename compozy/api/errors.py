"""How every failure becomes a JSON error response ``{"error": {"code", "message"}}``.

``compozy.errors`` types map to statuses in one table (:data:`STATUS_BY_ERROR`); HTTP-level
refusals (401, 403, 404 for an unknown route, 405, 503 without an engine) are ``ApiError`` or
Starlette's ``HTTPException``; FastAPI's request validation becomes 422 with the same shape; and
anything else is a 500 whose details go to the log, not to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from compozy.api.models import PATTERN_MEANINGS
from compozy.errors import (
    CompozyError,
    ConflictError,
    ConstraintViolation,
    NotFoundError,
    StoreUnavailable,
    ValidationError,
    WorkflowNotReady,
)

__all__ = [
    "STATUS_BY_ERROR",
    "ApiError",
    "error_response",
    "install_error_handlers",
    "status_for",
]

_log = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[CompozyError], int], ...] = (
    (NotFoundError, 404),
    (ValidationError, 422),
    (ConflictError, 409),
    # A foreign key refused the write: through this API only when the user a key is being made
    # for was deleted meanwhile, so the request conflicts with the current state (409), it is
    # not malformed (422).
    (ConstraintViolation, 409),
    (WorkflowNotReady, 409),
    (StoreUnavailable, 503),
)
"""compozy error type -> HTTP status; the first ``isinstance`` match wins; anything else: 500."""

_MAX_MESSAGE = 2000
_UNAVAILABLE = "the database is unavailable; retry later"
_INTERNAL = "the server failed to handle this request; the cause is in its log"


class ApiError(HTTPException):
    """An HTTP-level refusal with its own error code (401 Unauthorized, 503 NoEngine, ...)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, dict(headers) if headers else None)
        self.code = code


def status_for(exc: CompozyError) -> int:
    """The HTTP status for a compozy error."""
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 500


def _printable(message: str) -> str:
    # Messages may quote what the client sent; a lone surrogate in it would make the JSON
    # encoder fail and turn a 4xx into a 500, and a huge value would be echoed whole.
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error response every failure is sent as."""
    body = {"error": {"code": code, "message": _printable(message)}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _code_for_status(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "HTTPError"
    return "".join(word.capitalize() for word in phrase.replace("-", " ").split())


async def _compozy_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CompozyError)
    status = status_for(exc)
    code = type(exc).__name__
    if status == 503:
        _log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, code, _UNAVAILABLE)
    if status == 500:
        _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(status, code, _INTERNAL)
    return error_response(status, code, str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = getattr(exc, "code", None) or _code_for_status(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) else _code_for_status(exc.status_code)
    if exc.status_code == 404 and not isinstance(exc, ApiError):
        code, message = "RouteNotFound", f"no route matches {request.method} {request.url.path}"
    elif exc.status_code == 405 and not isinstance(exc, ApiError):
        message = f"{request.url.path} does not accept {request.method}"
    return error_response(exc.status_code, code, message, exc.headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _problem(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", ""))
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern"))
        message = PATTERN_MEANINGS.get(pattern, message)
    return f"{_location(tuple(error.get('loc', ())))}: {message}"


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(error) for error in exc.errors()]
    return error_response(422, "RequestValidationError", "; ".join(problems) or "invalid request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", _INTERNAL)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""
    app.add_exception_handler(CompozyError, _compozy_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(Exception, _unexpected)
