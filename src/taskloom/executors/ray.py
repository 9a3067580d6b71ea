"""Runs tasks as Ray tasks: `executor="ray"` on a task, or `run_on_ray(task, ...)` once.

The request is the same JSON data the process pool sends (see `remote.py`); the Ray worker
locates the task by module and qualified name, resolves its secrets there, runs it and
returns the reply. Tasks that cannot be imported by name (defined in `__main__` or inside a
function) are shipped by value with Ray's cloudpickle instead. `ray` is imported only here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from .. import serde
from ..errors import ConfigError, TaskFailedError, TaskTimeoutError, missing_extra
from ..outcome import value_of
from ..run import TaskRun
from ..task import Task, make_task
from .base import RunEnv, with_timeout
from .remote import (
    build_request,
    importable_address,
    locate,
    run_request,
    take_report,
)

# What a task that cannot be imported by name carries to the worker instead of its address.
Shipped = tuple[Callable[..., Any], Callable[..., Any] | None, Callable[[Any], Any] | None]


def import_ray() -> ModuleType:
    """The ray module, or ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


def ray_options(task: Task) -> dict[str, Any]:
    """Ray task options from the task: `num_cpus`, `num_gpus`, `memory`, custom resources as
    `resources`, env as runtime_env.

    `max_retries=0`: the task's RetryPolicy decides about retries, not Ray, so a crashed
    worker shows up as a failed attempt instead of a silent re-run.
    """
    opts: dict[str, Any] = {"max_retries": 0}
    res = task.resources
    if res is not None:
        if res.cpu is not None:
            opts["num_cpus"] = res.cpu_cores
        if res.gpu:
            opts["num_gpus"] = res.gpu
        if res.memory is not None:
            opts["memory"] = res.memory_bytes
        if res.custom:
            opts["resources"] = dict(res.custom)
    if task.env:
        opts["runtime_env"] = {"env_vars": dict(task.env)}
    return opts


def init_options(address: str | None, init_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`ray.init` keywords: connect to `address`, or start a quiet local Ray sized to the host."""
    opts: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    if address:
        opts["address"] = address
    elif not os.environ.get("RAY_ADDRESS"):
        opts["num_cpus"] = os.cpu_count() or 1
    opts.update(init_kwargs or {})
    return opts


def ensure_ray(address: str | None = None, init_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Initialise Ray unless it already is; True if this call started (or joined) it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    ray.init(**init_options(address, init_kwargs))
    return True


def _ray_entry(payload: bytes, shipped: Shipped | None) -> bytes:
    """Runs inside the Ray worker: find the task, run the request, return the reply.

    Request and reply cross as JSON bytes: Ray moves bytes faster than nested dicts.
    """
    request = serde.loads(payload)
    # A local cluster's workers do not share the driver's sys.path (pytest rootdirs,
    # notebooks); appending it lets them import the task's module the same way.
    sys.path.extend(p for p in request.pop("sys_path", ()) if p not in sys.path)
    if shipped is None:
        task = locate(request["address"])
    else:
        fn, pre, post = shipped
        task = dataclasses.replace(make_task(fn, name=request["task"]), pre=pre, post=post)
    return serde.dumps(run_request(task, request))


def _address(task: Task) -> tuple[str, str] | None:
    """The task's import address if it leads back to this very task, else None (ship it)."""
    address = importable_address(task)
    if address is None:
        return None
    try:
        return address if locate(address).fn is task.fn else None
    except ConfigError:
        return None


def _submit(remote: Any, task: Task, run: TaskRun, kwargs: dict[str, Any]) -> Any:
    """Start one attempt on Ray and return its ObjectRef (of the reply's JSON bytes)."""
    if task.interface.secret_fields:
        raise ConfigError(
            f"task {task.name!r} has SecretStr inputs "
            f"({', '.join(sorted(task.interface.secret_fields))}), which do not travel to Ray "
            "(its object store may spill them to disk): use secrets=[Secret(...)] instead"
        )
    request = build_request(task, run, kwargs)
    request["sys_path"] = list(sys.path)
    address = _address(task)
    shipped: Shipped | None = None
    if address is not None:
        request["address"] = address
    else:
        shipped = (task.fn, task.pre, task.post)
    return remote.options(**ray_options(task)).remote(serde.dumps(request), shipped)


def _ray_failure(exc: BaseException, run_id: str) -> TaskFailedError:
    """A Ray-side failure (worker crash, OOM kill, lost object) as a TaskFailedError."""
    return TaskFailedError(str(exc), run_id=run_id, type_name=type(exc).__name__)


class RayExecutor:
    """Runs each attempt as a Ray task, with resources taken from the task's `Resources`.

    Connects to `address` (or `RAY_ADDRESS`), or starts a local Ray when none is running;
    `init_kwargs` go to `ray.init`. A Ray this executor started is shut down by `stop()`.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, init_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self._ray: ModuleType | None = None
        self._remote: Any = None
        self._owns_ray = False

    async def start(self) -> None:
        """Connect to (or start) Ray off the event loop: a local start takes seconds."""
        if self._ray is not None:
            return
        ray = import_ray()
        self._owns_ray = await asyncio.to_thread(ensure_ray, self.address, self.init_kwargs)
        self._remote = ray.remote(_ray_entry)
        self._ray = ray

    async def stop(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._ray is not None and self._owns_ray:
            await asyncio.to_thread(self._ray.shutdown)
        self._ray, self._remote, self._owns_ray = None, None, False

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Submit the attempt and await its ObjectRef; timeout or cancel force-cancels it."""
        await self.start()
        ray = self._ray
        assert ray is not None
        ref = _submit(self._remote, task, run, kwargs)
        try:
            data = await with_timeout(asyncio.wrap_future(ref.future()), timeout, task.name)
        except (TaskTimeoutError, asyncio.CancelledError):
            ray.cancel(ref, force=True)
            raise
        except ray.exceptions.RayError as exc:
            raise _ray_failure(exc, run.id) from None
        reply = serde.loads(data)
        take_report(run, reply)
        return value_of(task, reply)


def run_on_ray(task: Task, *args: Any, address: str | None = None, **kwargs: Any) -> Any:
    """Run `task` once on Ray and return its typed result (smallpond's `run_on_ray`).

    Blocking: call it from scripts and notebooks, not from async code (use `executor="ray"`
    there). Connects to the cluster at `address` (or `RAY_ADDRESS`), else starts a local Ray;
    either is left up for the next call. `address` belongs to this call: a task input of that
    name is passed positionally. Raises `TaskTimeoutError` past the task's `timeout_seconds`,
    `TaskFailedError` if it fails.
    """
    ray = import_ray()
    model = task.prepare(args, kwargs)
    run = TaskRun(task=task.name, params=task.interface.stored_params(model))
    ensure_ray(address)
    ref = _submit(ray.remote(_ray_entry), task, run, task.interface.call_kwargs(model))
    try:
        data = ray.get(ref, timeout=task.timeout_seconds)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise TaskTimeoutError(
            f"task {task.name!r} timed out after {task.timeout_seconds:g}s"
        ) from None
    except ray.exceptions.RayError as exc:
        raise _ray_failure(exc, run.id) from None
    return value_of(task, serde.loads(data))
