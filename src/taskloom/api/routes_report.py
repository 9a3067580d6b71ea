"""`GET /api/runs/{id}/report`: the report page of a run whose task has `report=True`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from ..report import load_report, render_report
from .context import ApiContext
from .schemas import Problem

# The page holds the task author's HTML: a sandbox gives it an origin of its own, so it can
# neither run scripts nor read the API's token or cookies.
SANDBOX = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def router(ctx: ApiContext) -> APIRouter:
    """The report route."""
    api = APIRouter(prefix="/api/runs", tags=["runs"])
    manager = ctx.manager

    @api.get(
        "/{run_id}/report",
        response_class=HTMLResponse,
        responses={404: {"model": Problem, "description": "unknown run, or no report"}},
        summary="A run's report page",
    )
    async def run_report(run_id: str) -> HTMLResponse:
        """The HTML page of what the run reported (`ctx.report(...)`); 404 unless its task
        was declared with `report=True`."""
        run = await manager.get_run(run_id)
        task = manager.tasks.get(run.task)
        if task is None or not task.report:
            raise HTTPException(
                404,
                f"run {run_id} ({run.task}) has no report: its task does not declare report=True",
            )
        parts = await load_report(await ctx.store(), run.id, manager.clock())
        return HTMLResponse(render_report(run, parts or []), headers=SANDBOX)

    return api
