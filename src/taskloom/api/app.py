"""`create_app(manager)`: the FastAPI app of the API, `/health`, `/metrics` and the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import missing_extra

try:
    from fastapi import Depends, FastAPI
except ImportError as exc:  # pragma: no cover - depends on the install
    raise missing_extra("api", "fastapi") from exc

from .. import __version__
from ..manager import TaskManager
from ..metrics import prometheus_hooks_for
from . import (
    dashboard,
    handlers,
    routes_control,
    routes_report,
    routes_runs,
    routes_series,
    routes_status,
    routes_tasks,
)
from .auth import bearer_guard, resolve_token
from .body_guard import DEFAULT_MAX_BODY_BYTES, BodyGuard
from .context import ApiContext
from .schemas import Problem, Responses


def create_app(
    manager: TaskManager,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The HTTP API and dashboard of `manager`, as an ASGI app.

    `token` (else `TASKLOOM_API_TOKEN`) is required as `Authorization: Bearer <token>` on every
    data route; `/health` and the dashboard's static page stay open. A request body is read
    only once the token checks out, and one over `max_body_bytes` (1 MiB by default) gets 413
    without being buffered. The app connects the
    manager on startup and closes it on shutdown only if it opened it. Mounted into another
    app (`parent.mount("/tasks", create_app(manager))`) it gets no lifespan of its own: the
    manager then connects on first use, and the parent closes it.
    """
    token = resolve_token(token)
    guard = bearer_guard(token)
    ctx = ApiContext(manager, prometheus_hooks_for(manager))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        opened = not manager.connected
        await manager.connect()
        try:
            yield
        finally:
            if opened:
                await manager.close()

    app = FastAPI(
        title="taskloom",
        version=__version__,
        summary="Runs, tasks and workers of a taskloom manager.",
        lifespan=lifespan,
    )
    handlers.install(app)
    app.add_middleware(BodyGuard, token=token, max_body_bytes=max_body_bytes)
    guarded = [Depends(guard)]
    common: Responses = {
        422: {"model": Problem, "description": "invalid request, one error per field"},
        503: {"model": Problem, "description": "the store does not answer"},
    }
    if token is not None:
        common[401] = {"model": Problem, "description": "missing or wrong bearer token"}
    app.include_router(routes_tasks.router(ctx), dependencies=guarded, responses=common)
    app.include_router(routes_runs.router(ctx), dependencies=guarded, responses=common)
    app.include_router(routes_control.router(ctx), dependencies=guarded, responses=common)
    app.include_router(routes_report.router(ctx), dependencies=guarded, responses=common)
    app.include_router(routes_status.router(ctx, guard), responses=common)
    app.include_router(routes_series.router(ctx), dependencies=guarded, responses=common)
    app.include_router(dashboard.router())
    app.mount("/static", dashboard.static_files(), name="static")
    app.state.taskloom = ctx
    return app
