"""`taskloom queue ls|pause|resume|limit`: look at and steer queues while workers run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from .queues import QueueInfo

app = typer.Typer(help="List, pause, resume and rate-limit queues.", no_args_is_help=True)

AppOpt = Annotated[
    str | None, typer.Option("--app", "-a", help="module:manager (or set TASKLOOM_APP)")
]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _show(infos: list[QueueInfo], as_json: bool) -> None:
    from .cli import console

    if as_json:
        console.print_json(json.dumps([i.model_dump() for i in infos]))
        return
    table = Table("queue", "state", "high", "medium", "low", "oldest queued", "rate limit")
    for i in infos:
        state = "[yellow]paused[/]" if i.paused else "[green]running[/]"
        table.add_row(
            i.name, state, str(i.depth["high"]), str(i.depth["medium"]), str(i.depth["low"]),
            _age(i.oldest_queued_age), i.rate_limit or "-",
        )  # fmt: skip
    console.print(table)


@app.command("ls")
def ls_cmd(
    app_spec: AppOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every queue: paused or not, queued runs by priority, age of the oldest queued run."""
    from .cli import _manager, _run

    manager = _manager(app_spec)

    async def go() -> list[QueueInfo]:
        async with manager:
            return await manager.queues()

    _show(_run(go), as_json)


def _switch(name: str, app_spec: str | None, paused: bool) -> None:
    from .cli import _manager, _run

    manager = _manager(app_spec)

    async def go() -> QueueInfo:
        async with manager:
            return await (manager.pause(name) if paused else manager.resume(name))

    _show([_run(go)], False)


@app.command("pause")
def pause_cmd(name: str, app_spec: AppOpt = None) -> None:
    """Stop every worker claiming from NAME; it still accepts runs, running ones finish."""
    _switch(name, app_spec, True)


@app.command("resume")
def resume_cmd(name: str, app_spec: AppOpt = None) -> None:
    """Let workers claim from NAME again (they are woken at once)."""
    _switch(name, app_spec, False)


@app.command("limit")
def limit_cmd(
    name: str,
    rate: Annotated[
        str | None, typer.Argument(help="starts per window: 100/m, 5/s, 10/30s")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="remove the queue's limit")] = False,
    app_spec: AppOpt = None,
) -> None:
    """Cap how many runs of queue NAME start per window, across every worker."""
    from .cli import _fail, _manager, _run

    if (rate is None) == (not off):
        raise _fail("give a rate such as 100/m, or --off")
    manager = _manager(app_spec)

    async def go() -> QueueInfo:
        async with manager:
            return await manager.set_queue_rate_limit(name, None if off else rate)

    _show([_run(go)], False)
