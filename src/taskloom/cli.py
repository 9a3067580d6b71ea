"""The `taskloom` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__, serde
from .appload import load_manager
from .errors import (
    ConfigError,
    InvalidParamsError,
    RunNotFoundError,
    TaskloomError,
    UnknownTaskError,
)
from .logs import setup_logging
from .manager import TaskManager
from .run import TaskPriority, TaskRun, TaskState
from .run_lookup import find_run, short_ids
from .run_tree import format_seconds
from .run_view import print_run
from .secret_inputs import redact

T = TypeVar("T")

app = typer.Typer(
    name="taskloom",
    help="Run, queue, schedule and inspect taskloom tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help and errors print brackets as written: 'taskloom[redis]'
)
db_app = typer.Typer(help="Store schema commands.", no_args_is_help=True, rich_markup_mode=None)
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


@dataclass
class CliOptions:
    """The options given before the command (`taskloom --store URL --debug CMD`)."""

    debug: bool = False
    store: str | None = None


def _options() -> CliOptions:
    # the root options live in the environment, so spawned processes inherit them too
    return CliOptions(
        debug=os.environ.get("TASKLOOM_DEBUG", "").lower() in ("1", "true", "yes"),
        store=os.environ.get("TASKLOOM_STORE") or None,
    )


def _print_user(text: str, *, style: str | None = None, err: bool = False) -> None:
    """Print text as written: no markup, so `list[int]` keeps its brackets."""
    (err_console if err else console).print(Text(text, style=style or ""), soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    if _options().debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    line = message.splitlines()[0] if message.strip() else "failed"
    err_console.print(Text("error: ", style="red") + Text(line), soft_wrap=True)
    return typer.Exit(code)


# Errors that mean "you asked for something wrong": exit 2. Other TaskloomErrors exit 1.
USAGE_ERRORS = (InvalidParamsError, UnknownTaskError, ConfigError, RunNotFoundError)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    try:
        return asyncio.run(main())
    except USAGE_ERRORS as exc:
        raise _fail(str(exc) if not isinstance(exc, KeyError) else exc.args[0], 2) from None
    except TaskloomError as exc:
        raise _fail(str(exc), 1) from None
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:  # a driver's own error (auth failure, DNS...): one line
        raise _fail(f"{type(exc).__name__}: {exc} (--debug prints the traceback)", 1) from None


def _manager(app_spec: str | None) -> TaskManager:
    try:
        return load_manager(app_spec, store=_options().store)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskloom {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="TASKLOOM_DEBUG", help="print tracebacks of errors")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="TASKLOOM_STORE", help="store URL; overrides the app's"),
    ] = None,
) -> None:
    """Run, queue, schedule and inspect taskloom tasks."""
    if debug:
        os.environ["TASKLOOM_DEBUG"] = "1"
    if store:
        os.environ["TASKLOOM_STORE"] = store


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
    shown = run.model_copy(update={"params": redact(run.params)})  # sealed secrets masked
    return shown.model_dump_json(indent=2, fallback=repr)  # a pickled result has no JSON form


def _print_outcome(run: TaskRun, as_json: bool) -> None:
    if as_json:
        console.print_json(_run_json(run))
        return
    if run.state is TaskState.success:
        result = run.result
        if result is not None:
            _print_user(serde.display(result) if not isinstance(result, str) else result)
        return
    error = run.failure
    line = Text(str(run.state), style=STATE_STYLE.get(run.state, "red"))
    line.append(f" {run.task} {run.id}")
    if error:
        line.append(f" {error.type_name}: {error.message}")
    err_console.print(line, soft_wrap=True)


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
    priority: Annotated[TaskPriority | None, typer.Option(help="high, medium or low")] = None,
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
            Text(i.name), Text(i.short_description), i.executor, Text(i.schedule or ""),
            nxt.isoformat(timespec="seconds") if nxt else "", i.priority, Text(",".join(i.tags)),
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
    # ids made close together share their leading (time) digits: print the shortest prefixes
    # that tell the listed runs apart; `show` accepts them
    table = Table("id", "task", "state", "queued", "took", "try", "error")
    for r, short in zip(runs, short_ids([r.id for r in runs]), strict=True):
        err = r.failure
        table.add_row(
            short, Text(r.task), Text(str(r.state), style=STATE_STYLE.get(r.state, "white")),
            r.queued.strftime("%m-%d %H:%M:%S") if r.queued else "",
            format_seconds(r.duration) if r.duration is not None else "", str(r.retry_attempt),
            Text(f"{err.type_name}: {err.message}"[:60]) if err else "",
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="run id, or a unique prefix of 6+ characters")],
    app_spec: AppOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: params, result or error, attempts, child runs and logs."""
    manager = _manager(app_spec)

    async def go() -> tuple[TaskRun, Any, list[dict[str, str]]]:
        async with manager:
            run = await find_run(manager, run_id)
            if as_json:
                return run, None, []
            from .run_tree import run_tree

            return run, await run_tree(manager, run.id), await manager.run_logs(run.id)

    run, tree, logs = _run(go)
    if as_json:
        console.print_json(_run_json(run))
        return
    print_run(console, run, tree, logs)


@app.command("cancel")
def cancel_cmd(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    app_spec: AppOpt = None,
) -> None:
    """Cancel a run: a queued run is aborted, a running one is asked to stop."""
    manager = _manager(app_spec)

    async def go() -> TaskRun:
        async with manager:
            return await manager.cancel((await find_run(manager, run_id)).id)

    run = _run(go)
    console.print(
        Text(f"{run.id} {run.state}{' (cancel requested)' if run.cancel_requested else ''}")
    )


@app.command("retry")
def retry_cmd(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    app_spec: AppOpt = None,
) -> None:
    """Queue a finished run again as a new run; print the new id."""
    manager = _manager(app_spec)

    async def go() -> TaskRun:
        async with manager:
            return await manager.retry((await find_run(manager, run_id)).id)

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


def _env(name: str) -> str:
    return f"TASKLOOM_WORKER_{name}"


class LogLevel(StrEnum):
    """`--log-level` values (any case)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class LogFormat(StrEnum):
    """`--log-format` values: text lines or JSON lines."""

    text = "text"
    json = "json"


class CatchUp(StrEnum):
    """What the scheduler does with ticks missed while it was down."""

    one = "one"
    skip = "skip"


def _level_opt(env: str) -> Any:
    return typer.Option("--log-level", envvar=env, case_sensitive=False, help="logging level")


def _format_opt(env: str) -> Any:
    return typer.Option(
        "--log-format", envvar=env, case_sensitive=False, help="text lines or JSON lines"
    )


@app.command("worker")
def worker_cmd(
    app_spec: AppOpt = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, envvar=_env("CONCURRENCY"), help="runs at once"),
    ] = 10,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", envvar=_env("QUEUES"), help="queue(s) to serve (default: all)"
        ),
    ] = None,
    lease: Annotated[
        float | None, typer.Option(min=0.1, envvar=_env("LEASE"), help="lease (visibility) seconds")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0.0, envvar=_env("GRACE"), help="drain grace seconds on SIGTERM")
    ] = 30.0,
    burst: Annotated[
        bool, typer.Option(envvar=_env("BURST"), help="exit when nothing is due")
    ] = False,
    with_scheduler: Annotated[
        bool, typer.Option(envvar=_env("WITH_SCHEDULER"), help="also run the scheduler")
    ] = False,
    lock_ttl: Annotated[
        float, typer.Option(min=0.1, envvar=_env("LOCK_TTL"), help="scheduler leader lock seconds")
    ] = 30.0,
    catch_up: Annotated[
        CatchUp, typer.Option(envvar=_env("CATCH_UP"), help="missed ticks: one or skip")
    ] = CatchUp.one,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, envvar=_env("METRICS_PORT"), help="serve Prometheus metrics"
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar=_env("METRICS_HOST"), help="metrics bind address")
    ] = "127.0.0.1",
    log_level: Annotated[LogLevel, _level_opt(_env("LOG_LEVEL"))] = LogLevel.INFO,
    log_format: Annotated[LogFormat, _format_opt(_env("LOG_FORMAT"))] = LogFormat.text,
) -> None:
    """Serve the queue(s): claim, execute and ack runs until SIGTERM (drains first).

    Prints a banner, then one line per finished attempt. A second SIGINT/SIGTERM stops at once
    and requeues what is running. Every option also reads TASKLOOM_WORKER_<OPTION>.
    """  # fmt: skip
    from .consumer import TaskConsumer
    from .worker_report import WorkerReport, banner

    setup_logging(log_level.value, log_format.value)
    manager = _manager(app_spec)
    manager.hooks.add(WorkerReport())

    async def go() -> None:
        async with manager:
            if metrics_port is not None:
                from .metrics import serve_metrics

                serve_metrics(manager, metrics_port, metrics_host)
            consumer = TaskConsumer(
                manager, queues=queues, max_concurrent_tasks=concurrency, lease_seconds=lease,
                grace_seconds=grace,
            )  # fmt: skip
            banner(manager, consumer.worker_id, queues, concurrency, scheduler=with_scheduler)
            scheduler = None
            if with_scheduler:
                from .scheduler import TaskScheduler

                scheduler = TaskScheduler(manager, lock_ttl=lock_ttl, catch_up=catch_up.value)
                sched_task = asyncio.create_task(scheduler.run())
            try:
                await consumer.run(burst=burst, handle_signals=True)
            finally:
                if scheduler is not None:
                    await scheduler.stop()
                    await sched_task

    _run(go)


def _sched_env(name: str) -> str:
    return f"TASKLOOM_SCHEDULER_{name}"


@app.command("scheduler")
def scheduler_cmd(
    app_spec: AppOpt = None,
    lock_ttl: Annotated[
        float, typer.Option(min=0.1, envvar=_sched_env("LOCK_TTL"), help="leader lock seconds")
    ] = 30.0,
    catch_up: Annotated[
        CatchUp, typer.Option(envvar=_sched_env("CATCH_UP"), help="missed ticks: one or skip")
    ] = CatchUp.one,
    log_level: Annotated[LogLevel, _level_opt(_sched_env("LOG_LEVEL"))] = LogLevel.INFO,
    log_format: Annotated[LogFormat, _format_opt(_sched_env("LOG_FORMAT"))] = LogFormat.text,
) -> None:
    """Run the scheduler: queue scheduled tasks when due (safe to run several)."""
    import signal

    from .scheduler import TaskScheduler

    setup_logging(log_level.value, log_format.value)
    manager = _manager(app_spec)

    async def go() -> None:
        async with manager:
            scheduler = TaskScheduler(manager, lock_ttl=lock_ttl, catch_up=catch_up.value)
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
    port: Annotated[int, typer.Option(min=0, max=65535, help="port")] = 8000,
    log_level: Annotated[LogLevel, _level_opt("TASKLOOM_SERVE_LOG_LEVEL")] = LogLevel.INFO,
    log_format: Annotated[LogFormat, _format_opt("TASKLOOM_SERVE_LOG_FORMAT")] = LogFormat.text,
) -> None:
    """Serve the HTTP API and dashboard (token required unless bound to loopback)."""
    from .errors import missing_extra

    try:
        from .api.server import serve
    except ConfigError as exc:  # the api package names the missing extra itself
        raise _fail(str(exc), 2) from None
    except ImportError as exc:
        raise _fail(str(missing_extra("api", exc.name or "fastapi")), 2) from None
    setup_logging(log_level.value, log_format.value)
    manager = _manager(app_spec)
    try:
        serve(manager, host=host, port=port, log_level=log_level.value.lower(), own_logging=False)
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
        # migrate() before connect(): connecting applies pending migrations silently
        migrate = getattr(store, "migrate", None)
        try:
            if migrate is None:
                await store.connect()
                return []
            done: list[str] = await migrate()
            return done
        finally:
            await store.close()

    applied = _run(go)
    if applied and applied[0].startswith("0001"):
        console.print(Text(f"created the schema (applied: {', '.join(applied)})"))
    elif applied:
        console.print(Text(f"applied: {', '.join(applied)}"))
    else:
        console.print("schema is up to date")


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

    for module, name in (
        ("taskloom.k8s.cli", "k8s"),
        ("taskloom.pipeline.cli", "pipeline"),
        ("taskloom.queue_cli", "queue"),
        ("taskloom.schedule_cli", "schedule"),
    ):
        try:
            sub = importlib.import_module(module).app
        except ImportError:
            continue
        sub.rich_markup_mode = None  # brackets in their help and output print as written
        app.add_typer(sub, name=name)


_register_subapps()


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr and exit 2."""
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        # click's usage errors (typer may carry its own copy of click): one line, exit 2
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            code = 0
        elif callable(message) and isinstance(code, int):
            err_console.print(Text("error: ", style="red") + Text(message()), soft_wrap=True)
        elif type(exc).__name__ == "Abort":
            code = 130
        else:
            raise
    sys.exit(code if isinstance(code, int) else 0)
