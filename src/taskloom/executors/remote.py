"""A run shipped to another interpreter (a pool child, a Ray worker) as plain JSON data.

The parent builds a request (where the task lives, its validated params in JSON form, a copy
of the run record, the names of its secrets); the other side locates the task, runs it and
answers with the result's JSON form or the failure as data. Secret *values* never travel:
only `Secret` definitions do, and they are resolved on the side that runs the function.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .. import outcome
from ..errors import ConfigError
from ..policies import Secret, resolve_secrets
from ..run import TaskRun
from ..task import Task

Request = dict[str, Any]
Reply = dict[str, Any]
ProgressFn = Callable[[float | None, str | None], None]


def importable_address(task: Task) -> tuple[str, str] | None:
    """`(module, qualname)` under which another interpreter can import `task`, else None."""
    module = getattr(task.fn, "__module__", None)
    qualname = getattr(task.fn, "__qualname__", "")
    if not module or module in ("__main__", "__mp_main__") or "<locals>" in qualname:
        return None
    return module, qualname


def task_address(task: Task) -> tuple[str, str]:
    """Where another interpreter finds `task`; raises ConfigError when it cannot."""
    address = importable_address(task)
    if address is None:
        where = f"{getattr(task.fn, '__module__', '?')}:{getattr(task.fn, '__qualname__', '?')}"
        raise ConfigError(
            f"task {task.name!r} ({where}) cannot run in another process: define it with @task "
            "at module level in an importable module (not __main__, not inside a function)"
        )
    if locate(address).fn is not task.fn:  # e.g. the Task was bound to another variable name
        raise ConfigError(
            f"task {task.name!r}: {address[0]}:{address[1]} is not this task; define it with "
            "@task so the module attribute named after the function is the Task itself"
        )
    return address


def locate(address: tuple[str, str] | list[str]) -> Task:
    """Import `module` and walk `qualname` to the Task object; raises ConfigError."""
    module, qualname = address
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import task {module}:{qualname}: {exc}") from exc
    if not isinstance(obj, Task):
        raise ConfigError(f"{module}:{qualname} is {type(obj).__name__}, not a Task (use @task)")
    return obj


def build_request(task: Task, run: TaskRun, kwargs: dict[str, Any]) -> Request:
    """The JSON-ready request for one attempt (no secret values, no live objects)."""
    model = task.interface.inputs.model_validate(kwargs)
    request = {
        "kind": "run",
        "task": task.name,
        "params": task.interface.stored_params(model),
        "run": run.record().model_dump(mode="json"),
        "secrets": [dataclasses.asdict(s) for s in task.secrets],
    }
    if run._node is not None:  # a DAG node's runtime travels with its run
        request["node"] = run._node.to_dict()
    return request


def error_reply(exc: BaseException, run_id: str | None) -> Reply:
    """A failure as a reply message (the shared outcome codec's form)."""
    return {"kind": "result", **outcome.failure(exc, run_id)}


def run_request(
    task: Task,
    request: Request,
    *,
    scope: Callable[[], AbstractContextManager[object]] = nullcontext,
    on_progress: ProgressFn | None = None,
) -> Reply:
    """Run one request here and return the reply; never raises for the task's own errors.

    `scope` wraps only the function call (environment, rlimits, affinity), so it is undone
    before the reply is built: a run that hit its memory limit can still report it.
    """
    run_id = request.get("run", {}).get("id")
    run: TaskRun | None = None
    try:
        run = TaskRun.model_validate(request["run"])
        if request.get("node") is not None:
            from ..dag.runtime import NodeRuntime  # only DAG runs carry one

            run._node = NodeRuntime.from_dict(request["node"])
        params = {**request["params"], **request.get("secret_params", {})}
        kwargs = task.interface.call_kwargs(task.interface.validate_stored(params))
        if on_progress is not None:
            report = on_progress
            run._on_progress = lambda r: report(r.progress, r.progress_note)
        with scope():
            secrets = tuple(Secret(**s) for s in request.get("secrets", ()))
            run._secrets = resolve_secrets(secrets)
            try:
                value = task.invoke_sync(run, kwargs)
            finally:
                run._secrets = {}
        reply: Reply = {"kind": "result", **outcome.success(task.interface.encode_result(value))}
    except BaseException as exc:  # every failure of the task becomes data
        reply = error_reply(exc, run_id)
    if run is not None and run._report is not None:
        reply["report"] = run._report  # what the task reported, even if it then failed
    return reply


def take_report(run: TaskRun, reply: Reply) -> None:
    """Put the report parts a reply carries on the parent's live run (`ReportHooks` saves them)."""
    if reply.get("report") is not None:
        run._report = list(reply["report"])
