"""`taskloom pipeline status|run|graph|ls|cat|inject`: the pipeline sub-app (typer + rich).

`--app module:attr` (or TASKLOOM_APP) names a `Pipeline`, or a `TaskManager` on which
pipelines were built (every pipeline registers its tasks there), or a callable returning
either.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ..appload import load_object
from ..errors import ConfigError, TaskloomError
from ..manager import TaskManager
from .pipeline import PIPELINE_ATTR, Pipeline, PipelineStats, TaskStatus
from .repositories import Repository

T = TypeVar("T")

app = typer.Typer(
    name="pipeline",
    help="Data pipelines: status, run, graph; ls, cat and inject for repositories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

AppOpt = Annotated[
    str | None,
    typer.Option("--app", "-a", help="module:pipeline (or module:manager; or set TASKLOOM_APP)"),
]


def pipelines_of(obj: Any) -> list[Pipeline]:
    """The pipelines an `--app` object stands for (a Pipeline, a manager, or a factory)."""
    if callable(obj) and not isinstance(obj, Pipeline | TaskManager):
        obj = obj()
    if isinstance(obj, Pipeline):
        return [obj]
    if isinstance(obj, TaskManager):
        found: dict[int, Pipeline] = {}
        for t in obj.tasks.values():
            p = getattr(t.fn, "__dict__", {}).get(PIPELINE_ATTR)
            if isinstance(p, Pipeline):
                found.setdefault(id(p), p)
        if not found:
            raise ConfigError("the manager has no pipeline tasks: build a Pipeline on it")
        return list(found.values())
    raise ConfigError(f"--app names a {type(obj).__name__}, not a Pipeline or TaskManager")


def load_pipelines(spec: str | None) -> list[Pipeline]:
    """Resolve `--app` (or TASKLOOM_APP) to pipelines."""
    spec = spec or os.environ.get("TASKLOOM_APP")
    if not spec:
        raise ConfigError("no app: pass --app module:pipeline or set TASKLOOM_APP")
    return pipelines_of(load_object(spec))


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except TaskloomError as exc:
        raise _fail(str(exc), 1) from None


def _pipelines(spec: str | None) -> list[Pipeline]:
    try:
        return load_pipelines(spec)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _status_table(rows: list[TaskStatus], title: str = "pipeline") -> Table:
    table = Table(title=title)
    for col in ("task", "kind", "ready", "running", "done", "failed"):
        table.add_column(col, justify="right" if col not in ("task", "kind") else "left")
    for r in rows:
        failed = f"[red]{r.failed}[/red]" if r.failed else "0"
        table.add_row(r.task, r.kind, str(r.ready), str(r.running), str(r.done), failed)
    return table


async def _close(pipelines: list[Pipeline]) -> None:
    for manager in {id(p.manager): p.manager for p in pipelines}.values():
        await manager.close()


@app.command("status")
def status_cmd(
    app_spec: AppOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Jobs per task: ready, running, done and failed."""
    pipelines = _pipelines(app_spec)

    async def go() -> list[list[TaskStatus]]:
        try:
            return [await p.status() for p in pipelines]
        finally:
            await _close(pipelines)

    results = _run(go)
    if as_json:
        console.print_json(json.dumps([asdict(r) for rows in results for r in rows]))
        return
    for p, rows in zip(pipelines, results, strict=True):
        console.print(_status_table(rows, f"pipeline (queue {p.queue})"))


@app.command("run")
def run_cmd(
    app_spec: AppOpt = None,
    max_passes: Annotated[
        int | None, typer.Option("--max-passes", help="stop after this many passes")
    ] = None,
) -> None:
    """Run the maintenance loop until nothing is ready or live; exit 1 if a job failed."""
    pipelines = _pipelines(app_spec)

    async def go() -> list[tuple[PipelineStats, list[TaskStatus]]]:
        out = []
        try:
            for p in pipelines:
                stats = await p.run(max_passes=max_passes)
                out.append((stats, await p.status()))
        finally:
            await _close(pipelines)
        return out

    failed = 0
    for stats, rows in _run(go):
        console.print(_status_table(rows))
        console.print(
            f"{stats.launched} launched, {stats.succeeded} succeeded, "
            f"{stats.failed} failed in {stats.passes} passes",
            highlight=False,
        )
        failed += stats.failed
    if failed:
        raise typer.Exit(1)


@app.command("graph")
def graph_cmd(
    app_spec: AppOpt = None,
    dot: Annotated[bool, typer.Option("--dot", help="Graphviz DOT instead of text")] = False,
) -> None:
    """The task/repository graph."""
    for p in _pipelines(app_spec):
        typer.echo(p.graph(dot=dot), nl=False)


# -- repositories ---------------------------------------------------------------------------------
def find_repository(pipelines: list[Pipeline], spec: str) -> Repository:
    """The repository `TASK.LINK` names (task and link names may hold dots themselves)."""
    for p in pipelines:
        for cut in [i for i, ch in enumerate(spec) if ch == "."]:
            task = p.tasks.get(spec[:cut])
            if task is not None and spec[cut + 1 :] in task.links:
                return task.links[spec[cut + 1 :]].repo
    known = sorted(
        f"{t}.{link}" for p in pipelines for t, pt in p.tasks.items() for link in pt.links
    )
    raise ConfigError(f"no repository {spec!r}: name one as TASK.LINK ({', '.join(known)})")


RepoArg = Annotated[str, typer.Argument(help="the repository, as TASK.LINK (e.g. crunch.done)")]


@app.command("ls")
def ls_cmd(
    repo: Annotated[str | None, typer.Argument(help="TASK.LINK; omit to list repositories")] = None,
    app_spec: AppOpt = None,
) -> None:
    """List a repository's keys, one a line (without TASK.LINK: every linked repository)."""
    pipelines = _pipelines(app_spec)
    if repo is None:
        for p in pipelines:
            for name, task in p.tasks.items():
                for link_name, link in task.links.items():
                    flags = ",".join(link.flags) or "-"
                    typer.echo(f"{name}.{link_name}\t{type(link.repo).__name__}\t{flags}")
        return

    async def go() -> list[str]:
        try:
            await pipelines[0].manager.connect()
            return sorted(await find_repository(pipelines, repo).snapshot())
        finally:
            await _close(pipelines)

    for key in _run(go):
        typer.echo(key)


@app.command("cat")
def cat_cmd(repo: RepoArg, key: str, app_spec: AppOpt = None) -> None:
    """Print the value of one key (its bytes, as stored); exit 2 if it is absent."""
    pipelines = _pipelines(app_spec)

    async def go() -> bytes:
        try:
            await pipelines[0].manager.connect()
            try:
                return await find_repository(pipelines, repo).read(key)
            except KeyError:
                raise ConfigError(f"{repo} has no key {key!r}") from None
        finally:
            await _close(pipelines)

    data = _run(go)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@app.command("inject")
def inject_cmd(
    repo: RepoArg,
    key: str,
    source: Annotated[
        str, typer.Option("--file", "-f", help="read the value from this file ('-': stdin)")
    ] = "-",
    app_spec: AppOpt = None,
) -> None:
    """Write one key's value from a file or stdin (atomically, replacing any old value)."""
    pipelines = _pipelines(app_spec)
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {source}: {exc}", 2) from None

    async def go() -> None:
        try:
            await pipelines[0].manager.connect()
            await find_repository(pipelines, repo).write(key, data)
        finally:
            await _close(pipelines)

    _run(go)
    err_console.print(f"wrote {len(data)} bytes to {repo} {key!r}", highlight=False)
