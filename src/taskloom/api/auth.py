"""Bearer-token auth: one shared token guards every data route when configured."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN_ENV = "TASKLOOM_API_TOKEN"


def resolve_token(token: str | None) -> str | None:
    """The token to require: the argument, else `TASKLOOM_API_TOKEN`, else none.

    An empty argument counts as not given, so a blank setting cannot switch auth off.
    """
    return token or os.environ.get(TOKEN_ENV) or None


def bearer_matches(header: bytes | None, expected: bytes) -> bool:
    """True if an `Authorization` header value is `Bearer <expected>` (constant-time)."""
    scheme, _, given = (header or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected)


def bearer_guard(token: str | None) -> Callable[..., Awaitable[None]]:
    """A dependency that rejects requests without `Authorization: Bearer <token>`.

    With no token it accepts everything and adds nothing to the OpenAPI document.
    """
    if token is None:

        async def open_access() -> None:
            """No token configured."""

        return open_access

    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description=f"the API token ({TOKEN_ENV})")

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        """Compare in constant time, so response timing does not leak the token."""
        given = credentials.credentials.encode() if credentials is not None else b""
        if not bearer_matches(b"Bearer " + given, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
