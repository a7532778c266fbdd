"""ASGI middleware of the API: the request body limit, JSON bodies only, and the access log.

Plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so that a request costs one extra call and
streams as before. Refusals have the API's JSON error body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from compozy.api.errors import ApiError, error_response

__all__ = ["ACCESS_LOGGER", "AccessLog", "JsonBodies"]

ACCESS_LOGGER = "compozy.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBodies:
    """Refuses a request body over ``max_body_bytes`` (413) and one that is not JSON (415).

    Every route of this API that takes a body takes JSON, so a body (any request with a
    ``Content-Length`` above 0 or a chunked one) needs ``Content-Type: application/json`` (or
    ``application/*+json``). A declared length over the limit is refused before anything is
    read; a chunked body as soon as what was read passes the limit.
    """

    def __init__(self, app: App, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        declared = int(length) if length is not None and length.strip().isdigit() else None
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # no body to speak of: h11 refuses bad lengths
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(declared)(scope, receive, send)
            return
        content_type = _header(scope, b"content-type")
        if (declared or chunked) and not _is_json(content_type):
            got = f"got {content_type!r}" if content_type else "none was given"
            response = error_response(
                415,
                "UnsupportedMediaType",
                f"the request body must be JSON, sent with Content-Type: application/json ({got})",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _too_large(self, size: int | None) -> Any:
        what = f"{size} bytes" if size is not None else "more"
        return error_response(
            413,
            "PayloadTooLarge",
            f"the request body is {what}, over the limit of {self.max_body_bytes} bytes "
            "(server.max_body_bytes)",
        )

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that raises 413 once the body read so far passes the limit."""
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body_bytes:
                    # Raised inside the route's body read, so the error handlers answer it.
                    raise ApiError(
                        413,
                        "PayloadTooLarge",
                        f"the request body is over the limit of {self.max_body_bytes} bytes "
                        "(server.max_body_bytes)",
                    )
            return message

        return counted


class AccessLog:
    """One INFO record on the ``compozy.access`` logger per HTTP request, once it is answered:
    ``CLIENT "METHOD PATH HTTP/VERSION" STATUS BYTES DURATIONms``. Headers (and so API keys)
    are never logged."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app fails before it starts a response
        sent = 0

        async def recorded(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            self._log.info("%s", _access_line(scope, status, sent, time.perf_counter() - started))


def _access_line(scope: Scope, status: int, sent: int, seconds: float) -> str:
    client = scope.get("client")
    who = client[0] if client else "-"
    path = scope.get("raw_path") or scope["path"].encode()
    target = bytes(path).decode("latin-1")
    query = scope.get("query_string") or b""
    if query:
        target += "?" + bytes(query).decode("latin-1")
    version = scope.get("http_version", "1.1")
    return (
        f'{who} "{scope["method"]} {target} HTTP/{version}" {status} {sent} {seconds * 1000:.1f}ms'
    )
