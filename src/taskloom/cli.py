"""The `taskloom` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .appload import load_manager
from .errors import ConfigError, InvalidParamsError, TaskloomError, UnknownTaskError
from .manager import TaskManager
from .run import TaskRun, TaskState

T = TypeVar("T")

app = typer.Typer(
    name="taskloom",
    help="Run, queue, schedule and inspect taskloom tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Store schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

AppOpt = Annotated[
    str | None, typer.Option("--app", "-a", help="module:manager (or set TASKLOOM_APP)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

STATE_STYLE = {
    TaskState.success: "green", TaskState.failure: "red", TaskState.aborted: "magenta",
    TaskState.rate_limited: "yellow", TaskState.running: "cyan", TaskState.queued: "blue",
    TaskState.interrupted: "yellow", TaskState.init: "white",
}  # fmt: skip


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    try:
        return asyncio.run(main())
    except (InvalidParamsError, UnknownTaskError, ConfigError) as exc:
        raise _fail(str(exc), 2) from None
    except TaskloomError as exc:
        raise _fail(str(exc), 1) from None


def _manager(app_spec: str | None) -> TaskManager:
    try:
        return load_manager(app_spec)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    """`key=value` pairs (values read as JSON when they parse), then `--params` JSON over them.

    `--params` wins where both name a key, as aio-fluid's CLI does.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _fail(f"parameter {pair!r} is not key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise _fail(f"--params is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise _fail("--params must be a JSON object")
        params.update(loaded)
    return params


def _run_json(run: TaskRun) -> str:
    return run.model_dump_json(indent=2)


def _print_outcome(run: TaskRun, as_json: bool) -> None:
    if as_json:
        console.print_json(_run_json(run))
        return
    if run.state is TaskState.success:
        result = run.result
        if result is not None:
            console.print(json.dumps(result) if not isinstance(result, str) else result)
        return
    error = run.failure
    detail = f"{error.type_name}: {error.message}" if error else ""
    err_console.print(
        f"[{STATE_STYLE.get(run.state, 'red')}]{run.state}[/] {run.task} {run.id} {detail}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("run")
def run_cmd(
    task: str,
    params: Annotated[list[str] | None, typer.Argument(help="key=value pairs")] = None,
    app_spec: AppOpt = None,
    params_json: Annotated[str | None, typer.Option("--params", help="JSON object")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Execute TASK now in this process and print its result (exit 1 if it failed)."""
    manager = _manager(app_spec)
    values = parse_params(params or [], params_json)

    async def go() -> TaskRun:
        async with manager:
            return await manager.execute(task, **values)

    run = _run(go)
    _print_outcome(run, as_json)
    if run.state is not TaskState.success:
        raise typer.Exit(1)


@app.command("enqueue")
def enqueue_cmd(
    task: str,
    params: Annotated[list[str] | None, typer.Argument(help="key=value pairs")] = None,
    app_spec: AppOpt = None,
    params_json: Annotated[str | None, typer.Option("--params", help="JSON object")] = None,
    priority: Annotated[str | None, typer.Option(help="high, medium or low")] = None,
    queue: Annotated[str | None, typer.Option(help="queue name")] = None,
    dedup_key: Annotated[str | None, typer.Option(help="deduplication key")] = None,
    delay: Annotated[float | None, typer.Option(help="seconds before it is due")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the run to finish")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a run of TASK for the workers; print its id (or its outcome with --wait)."""
    manager = _manager(app_spec)
    values = parse_params(params or [], params_json)

    async def go() -> TaskRun:
        async with manager:
            run = await manager.enqueue(
                task, values, priority=priority, queue=queue, dedup_key=dedup_key, delay=delay
            )
            return await manager.wait(run.id, timeout=timeout) if wait else run

    run = _run(go)
    if wait:
        _print_outcome(run, as_json)
        if run.state is not TaskState.success:
            raise typer.Exit(1)
    elif as_json:
        console.print_json(_run_json(run))
    else:
        console.print(run.id)


@app.command("ls")
def ls_cmd(app_spec: AppOpt = None, as_json: JsonOpt = False) -> None:
    """List the registered tasks (with schedules and their next fire time)."""
    manager = _manager(app_spec)

    async def go() -> dict[str, Any]:
        async with manager:
            from .scheduler import TaskScheduler

            fires = await TaskScheduler(manager).next_fires()
            return {name: fires.get(name) for name in manager.tasks}

    fires = _run(go)
    infos = [t.info() for t in manager.tasks.values()]
    if as_json:
        out = [
            {**i.model_dump(mode="json", exclude={"params"}),
             "next_fire": fires[i.name].isoformat() if fires.get(i.name) else None}
            for i in infos
        ]  # fmt: skip
        console.print_json(json.dumps(out))
        return
    table = Table("task", "description", "executor", "schedule", "next fire", "priority", "tags")
    for i in infos:
        nxt = fires.get(i.name)
        table.add_row(
            i.name, i.short_description, i.executor, i.schedule or "",
            nxt.isoformat(timespec="seconds") if nxt else "", i.priority, ",".join(i.tags),
        )  # fmt: skip
    console.print(table)


@app.command("runs")
def runs_cmd(
    app_spec: AppOpt = None,
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
    state: Annotated[TaskState | None, typer.Option(help="only this state")] = None,
    queue: Annotated[str | None, typer.Option(help="only this queue")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    manager = _manager(app_spec)

    async def go() -> list[TaskRun]:
        async with manager:
            return await manager.runs(task=task, state=state, queue=queue, limit=limit)

    runs = _run(go)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in runs]))
        return
    table = Table("id", "task", "state", "queued", "duration", "attempt", "error")
    for r in runs:
        err = r.failure
        table.add_row(
            r.id, r.task, f"[{STATE_STYLE.get(r.state, 'white')}]{r.state}[/]",
            r.queued.isoformat(timespec="seconds") if r.queued else "",
            f"{r.duration:.3f}s" if r.duration is not None else "", str(r.retry_attempt),
            f"{err.type_name}: {err.message}"[:60] if err else "",
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show_cmd(run_id: str, app_spec: AppOpt = None, as_json: JsonOpt = False) -> None:
    """Show one run (and its tree of child runs)."""
    manager = _manager(app_spec)

    async def go() -> tuple[TaskRun, Any]:
        async with manager:
            run = await manager.get_run(run_id)
            tree = None
            if not as_json:
                from .run_tree import run_tree

                tree = await run_tree(manager, run_id)
            return run, tree

    run, tree = _run(go)
    if as_json:
        console.print_json(_run_json(run))
        return
    console.print(tree)
    err = run.failure
    if err is not None:
        console.print(f"[red]{err.type_name}[/]: {err.message}", highlight=False)
        if err.traceback:
            console.print(err.traceback, highlight=False, markup=False)


@app.command("cancel")
def cancel_cmd(run_id: str, app_spec: AppOpt = None) -> None:
    """Cancel a run: a queued run is aborted, a running one is asked to stop."""
    manager = _manager(app_spec)

    async def go() -> TaskRun:
        async with manager:
            return await manager.cancel(run_id)

    run = _run(go)
    console.print(f"{run.id} {run.state}{' (cancel requested)' if run.cancel_requested else ''}")


@app.command("retry")
def retry_cmd(run_id: str, app_spec: AppOpt = None) -> None:
    """Queue a finished run again as a new run; print the new id."""
    manager = _manager(app_spec)

    async def go() -> TaskRun:
        async with manager:
            return await manager.retry(run_id)

    console.print(_run(go).id)


@app.command("purge")
def purge_cmd(
    older_than: Annotated[str, typer.Option(help="age: 90s, 30m, 12h, 7d, 2w")],
    state: Annotated[str | None, typer.Option(help="only this finished state")] = None,
    app_spec: AppOpt = None,
) -> None:
    """Delete finished runs older than --older-than (queued and running runs stay)."""
    from .retention import parse_age

    manager = _manager(app_spec)

    async def go() -> int:
        async with manager:
            return await manager.purge(parse_age(older_than), state=state)

    n = _run(go)
    console.print(f"purged {n} run{'' if n == 1 else 's'}")


@app.command("worker")
def worker_cmd(
    app_spec: AppOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="runs at once")] = 10,
    queues: Annotated[list[str] | None, typer.Option("--queue", "-q", help="queue(s)")] = None,
    lease: Annotated[float | None, typer.Option(help="lease (visibility) seconds")] = None,
    grace: Annotated[float, typer.Option(help="drain grace seconds on SIGTERM")] = 30.0,
    burst: Annotated[bool, typer.Option(help="exit when nothing is due")] = False,
    with_scheduler: Annotated[bool, typer.Option(help="also run the scheduler")] = False,
    lock_ttl: Annotated[float, typer.Option(help="scheduler leader lock seconds")] = 30.0,
    catch_up: Annotated[str, typer.Option(help="missed ticks: one or skip")] = "one",
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics")] = None,
    metrics_host: Annotated[str, typer.Option(help="metrics bind address")] = "127.0.0.1",
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
) -> None:
    """Serve the queue(s): claim, execute and ack runs until SIGTERM (drains first)."""
    from .consumer import TaskConsumer

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    manager = _manager(app_spec)

    async def go() -> None:
        async with manager:
            if metrics_port is not None:
                from .metrics import serve_metrics

                serve_metrics(manager, metrics_port, metrics_host)
            consumer = TaskConsumer(
                manager, queues=queues, max_concurrent_tasks=concurrency, lease_seconds=lease,
                grace_seconds=grace,
            )  # fmt: skip
            scheduler = None
            if with_scheduler:
                from .scheduler import TaskScheduler

                scheduler = TaskScheduler(manager, lock_ttl=lock_ttl, catch_up=catch_up)  # type: ignore[arg-type]
                sched_task = asyncio.create_task(scheduler.run())
            try:
                await consumer.run(burst=burst, handle_signals=True)
            finally:
                if scheduler is not None:
                    await scheduler.stop()
                    await sched_task

    _run(go)


@app.command("scheduler")
def scheduler_cmd(
    app_spec: AppOpt = None,
    lock_ttl: Annotated[float, typer.Option(help="leader lock seconds")] = 30.0,
    catch_up: Annotated[str, typer.Option(help="missed ticks: one or skip")] = "one",
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
) -> None:
    """Run the scheduler: queue scheduled tasks when due (safe to run several)."""
    import signal

    from .scheduler import TaskScheduler

    logging.basicConfig(level=log_level.upper())
    manager = _manager(app_spec)

    async def go() -> None:
        async with manager:
            scheduler = TaskScheduler(manager, lock_ttl=lock_ttl, catch_up=catch_up)  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(scheduler.stop()))
            await scheduler.run()

    _run(go)


@app.command("exec-run", hidden=True)
def exec_run_cmd(run_id: str, app_spec: AppOpt = None) -> None:
    """Execute one stored run in this process (what a Kubernetes Job runs)."""
    from .k8s.exec_run import exec_run

    manager = _manager(app_spec)

    async def go() -> int:
        async with manager:
            return await exec_run(manager, run_id)

    raise typer.Exit(_run(go))


@app.command("serve")
def serve_cmd(
    app_spec: AppOpt = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
) -> None:
    """Serve the HTTP API and dashboard (token required unless bound to loopback)."""
    from .api.server import serve

    manager = _manager(app_spec)
    try:
        serve(manager, host=host, port=port)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


@db_app.command("migrate")
def migrate_cmd(
    app_spec: AppOpt = None, url: Annotated[str | None, typer.Option(help="store URL")] = None
) -> None:
    """Create or upgrade the store's schema."""
    from .store import open_store

    async def go() -> list[str]:
        store = open_store(url) if url else _manager(app_spec).store
        migrate = getattr(store, "migrate", None)
        if migrate is None:
            await store.connect()
            await store.close()
            return []
        await store.connect()
        try:
            done: list[str] = await migrate()
        finally:
            await store.close()
        return done

    applied = _run(go)
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command("demo")
def demo_cmd(
    db: Annotated[str, typer.Option(help="SQLite file for the demo")] = "taskloom-demo.db",
    runs: Annotated[int, typer.Option(help="how many runs to queue")] = 24,
) -> None:
    """Run a small bundled app on embedded SQLite: queue, work, and show a summary."""
    from .demo import run_demo

    code = asyncio.run(run_demo(f"sqlite:///{db}", runs, console))
    raise typer.Exit(code)


def _register_subapps() -> None:
    """Sub-apps of optional features, added only when their modules exist."""
    import importlib

    for module, name in (("taskloom.k8s.cli", "k8s"), ("taskloom.pipeline.cli", "pipeline")):
        try:
            sub = importlib.import_module(module).app
        except ImportError:
            continue
        app.add_typer(sub, name=name)


_register_subapps()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
