"""One run for people (what `taskloom show RUN` prints): the tree of runs, params, result or
error, attempts and logs. User text is printed as written, never read as markup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from . import serde
from .run import TaskRun
from .run_tree import STATE_STYLES, format_seconds
from .secret_inputs import redact


def _json(value: Any) -> str:
    return serde.display(value, indent=2)


def _section(console: Console, title: str) -> None:
    console.print(Text(f"\n{title}", style="bold"))


def print_run(console: Console, run: TaskRun, tree: Any, logs: Sequence[dict[str, str]]) -> None:
    """Print `run` with its child-run `tree` (a rich renderable) and its log records."""
    console.print(tree)
    console.print(Text(f"id: {run.id}  queue: {run.queue}  priority: {run.priority}"))
    if run.from_run_id:
        console.print(Text(f"retried from: {run.from_run_id}"))
    _section(console, "params")
    console.print(Text(_json(redact(run.params))))
    failure = run.failure
    if failure is not None and run.state.is_failure:
        _section(console, "error")
        console.print(Text(f"{failure.type_name}: {failure.message}", style="red"))
        if failure.traceback:
            console.print(Text(failure.traceback.rstrip()))
    elif run.is_done:
        _section(console, "result")
        console.print(Text(_json(run.result)))
    if run.attempts:
        _section(console, "attempts")
        for a in run.attempts:
            took = (a.end - a.start).total_seconds() if a.start and a.end else None
            line = Text(f"{a.attempt + 1}. ")
            line.append(str(a.state), style=STATE_STYLES.get(a.state, ""))
            if a.start:
                line.append(f" {a.start.isoformat(timespec='seconds')}")
            if took is not None:
                line.append(f" took {format_seconds(took)}")
            if a.worker:
                line.append(f" on {a.worker}")
            if a.error:
                line.append(f": {a.error.get('type', 'Error')}: {a.error.get('message', '')}")
            console.print(line, soft_wrap=True)
    _section(console, f"logs ({len(logs)})")
    for entry in logs:
        line = Text(f"{entry['ts']} {entry['level']:<7} {entry['logger']} ", style="dim")
        line.append(entry["message"])
        console.print(line, soft_wrap=True)
