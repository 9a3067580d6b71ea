"""Checks a request passes before its body is read: the token, then the body's size.

An ASGI middleware, so it runs before FastAPI buffers or parses anything. A request carrying
a body (every such route is a data route) must bring the token first: an unauthenticated
upload is refused with 401 without reading a byte of it. Then a `Content-Length` over the
limit is refused with 413 at once, and a body streamed without one is counted as it arrives
and refused the moment it passes the limit, so at most `max_body_bytes` is ever held.
"""

from __future__ import annotations

from fastapi import status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import bearer_matches
from .handlers import problem

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: far above any params object the API accepts


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class BodyGuard:
    """Refuse unauthenticated or oversized request bodies before the app reads them."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = token.encode() if token is not None else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        if length in (None, b"0") and not chunked:  # no body: the routes' own guard decides
            await self.app(scope, receive, send)
            return
        if self.expected is not None and not bearer_matches(
            _header(scope, b"authorization"), self.expected
        ):
            refusal = problem(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token")
            refusal.headers["WWW-Authenticate"] = "Bearer"
            await refusal(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over the limit of {self.max_body_bytes} bytes"
        await problem(status.HTTP_413_CONTENT_TOO_LARGE, detail)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then the live channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
