"""`taskloom schedule add|rm|ls|enable|disable`: schedules added and removed while running."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from .stored_schedules import ScheduleInfo

if TYPE_CHECKING:
    from .manager import TaskManager

T = TypeVar("T")

app = typer.Typer(help="Add, remove and list schedules at run time.", no_args_is_help=True)

AppOpt = Annotated[
    str | None, typer.Option("--app", "-a", help="module:manager (or set TASKLOOM_APP)")
]
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_interval(text: str) -> timedelta:
    """`1s`, `500ms`, `5m`, `2h`, `1d` or plain seconds."""
    from .errors import ScheduleError

    match = _INTERVAL.match(text.lower())
    if match is None:
        raise ScheduleError(f"invalid interval {text!r}: use 30s, 5m, 2h, 1d or seconds")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def _call(app_spec: str | None, op: Callable[[TaskManager], Awaitable[T]]) -> T:
    """Run `op` on the app's manager; a ScheduleError (unknown name, bad schedule, a schedule
    in code) is a usage error: exit 2."""
    from .cli import _fail, _manager, _run
    from .errors import ScheduleError

    manager = _manager(app_spec)

    async def go() -> T | ScheduleError:
        async with manager:
            try:
                return await op(manager)
            except ScheduleError as exc:
                return exc

    out = _run(go)
    if isinstance(out, ScheduleError):
        raise _fail(str(out))
    return out


def _show(items: list[ScheduleInfo], as_json: bool) -> None:
    from .cli import console

    if as_json:
        console.print_json(json.dumps([i.model_dump(mode="json") for i in items]))
        return
    table = Table("name", "task", "schedule", "source", "enabled", "next fire", "last run")
    for i in items:
        table.add_row(
            i.name, i.task, i.schedule, i.source, "yes" if i.enabled else "[yellow]no[/]",
            i.next_fire.isoformat() if i.next_fire else "-", i.last_run_id or "-",
        )  # fmt: skip
    console.print(table)


@app.command("add")
def add_cmd(
    name: str,
    task: str,
    params: Annotated[list[str] | None, typer.Argument(help="key=value pairs")] = None,
    every: Annotated[str | None, typer.Option("--every", help="interval: 1s, 5m, 2h")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="cron expression")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="time zone of --cron")] = None,
    params_json: Annotated[str | None, typer.Option("--params", help="params as JSON")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="store it switched off")] = False,
    app_spec: AppOpt = None,
) -> None:
    """Store schedule NAME firing TASK; the leader scheduler picks it up within one tick."""
    from .cli import _fail, parse_params
    from .errors import ScheduleError
    from .schedules import Schedule, crontab
    from .schedules import every as every_

    if (every is None) == (cron is None):
        raise _fail("give exactly one of --every and --cron")
    if tz is not None and cron is None:
        raise _fail("--tz applies to --cron only")
    values = parse_params(params or [], params_json)
    try:  # a bad interval, cron expression or time zone is a usage error
        sched: Schedule = every_(parse_interval(every)) if every else crontab(cron or "", tz)
    except ScheduleError as exc:
        raise _fail(str(exc)) from None
    added = _call(
        app_spec, lambda m: m.add_schedule(name, task, sched, values, enabled=not disabled)
    )
    _show([added], False)


@app.command("rm")
def rm_cmd(name: str, app_spec: AppOpt = None) -> None:
    """Remove stored schedule NAME (its runs already queued stay)."""
    _call(app_spec, lambda m: m.remove_schedule(name))


@app.command("ls")
def ls_cmd(
    app_spec: AppOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Schedules in code and stored ones, with their source, next fire and last run."""
    _show(_call(app_spec, lambda m: m.schedules()), as_json)


def _switch(name: str, app_spec: str | None, enabled: bool) -> None:
    _show([_call(app_spec, lambda m: m.set_schedule_enabled(name, enabled))], False)


@app.command("enable")
def enable_cmd(name: str, app_spec: AppOpt = None) -> None:
    """Switch schedule NAME on."""
    _switch(name, app_spec, True)


@app.command("disable")
def disable_cmd(name: str, app_spec: AppOpt = None) -> None:
    """Switch schedule NAME off (a schedule in code: its task's schedules)."""
    _switch(name, app_spec, False)
