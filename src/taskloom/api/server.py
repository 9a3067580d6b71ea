"""`serve(manager)`: run the API and dashboard with uvicorn; never exposed without a token."""

from __future__ import annotations

import ipaddress
from typing import Any

from ..errors import ConfigError, missing_extra
from ..manager import TaskManager
from .auth import TOKEN_ENV, resolve_token
from .body_guard import DEFAULT_MAX_BODY_BYTES


def is_loopback(host: str) -> bool:
    """True for a loopback address (or "localhost"); names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Raise ConfigError when `host` is reachable from other machines and no token is set."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host!r} without a token: set {TOKEN_ENV} (clients then send "
            "'Authorization: Bearer <token>') or bind 127.0.0.1"
        )


def serve(
    manager: TaskManager,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    log_level: str = "info",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    own_logging: bool = True,
) -> None:
    """Serve `create_app(manager)` with uvicorn until interrupted (blocking).

    A host other than a loopback address needs a token (`token=` or `TASKLOOM_API_TOKEN`).
    `own_logging=False` leaves logging as configured (the CLI's shared format).
    """
    token = resolve_token(token)
    check_bind(host, token)
    try:
        import uvicorn
    except ImportError as exc:
        raise missing_extra("api", "uvicorn") from exc
    from .app import create_app

    extra: dict[str, Any] = {} if own_logging else {"log_config": None}
    app = create_app(manager, token=token, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **extra)
