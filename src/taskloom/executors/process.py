"""Runs cpu_bound tasks in a warm pool of spawned interpreters (POSIX).

A pool of our own rather than `concurrent.futures.ProcessPoolExecutor`: one run must be
killable (timeout, cancel) without breaking the runs of the other children, and a child that
dies (segfault, `os._exit`, the OOM killer) must fail only its own run.

Each child serves one run at a time. The parent sends a JSON request over the child's pipe
(where the task lives, params, a copy of the run record, secret *definitions*, env, limits)
and waits for the reply without blocking the event loop (it watches the pipe and the child's
exit sentinel). Progress the task reports arrives on the same pipe before the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from .. import serde
from ..errors import ConfigError, TaskFailedError
from ..outcome import value_of
from ..policies import parse_memory
from ..run import TaskRun
from ..runlog import replay_record
from ..secret_inputs import secret_values
from ..task import Task
from ._child import child_main
from .base import RunEnv, with_timeout
from .remote import Reply, Request, build_request, take_report, task_address

START_METHODS = ("spawn", "forkserver")

# Requests larger than a pipe buffer are written from a thread: a child still reading would
# otherwise stall the event loop for the length of the copy.
_INLINE_SEND_BYTES = 64 * 1024

_STOP = serde.dumps({"kind": "stop"})


class ProcessDiedError(TaskFailedError):
    """The child process running a task died (crash, signal, out of memory) or never started."""

    def __init__(
        self, message: str, *, pid: int | None, exitcode: int | None, run_id: str | None = None
    ) -> None:
        super().__init__(message, run_id=run_id, type_name="ProcessDiedError")
        self.pid = pid
        self.exitcode = exitcode


class OutOfMemoryError(TaskFailedError):
    """A run ran out of memory in its child: it went past its memory limit (an rlimit on the
    address space, from the task's `Resources` or `ProcessExecutor.set_memory_limit`)."""

    def __init__(self, message: str, *, limit: int | None, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id, type_name="OutOfMemoryError")
        self.limit = limit


def describe_exit(exitcode: int | None) -> str:
    """How a child ended, in words: `exited with code 3`, `was killed by SIGSEGV`."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if exitcode == -signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


class _Gone(Exception):
    """The child's pipe closed or its process ended while we waited on it."""


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    slot: int
    pid: int | None
    ready: bool = False
    runs: int = 0
    exitcode: int | None = field(default=None)

    def exited(self) -> bool:
        """True once the process ended (its sentinel is readable); does not reap it."""
        return bool(wait([self.process.sentinel], 0))


async def _readable(*fds: int) -> None:
    """Wait until any of `fds` is readable, without a thread."""
    loop = asyncio.get_running_loop()
    woke: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not woke.done():
            woke.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await woke
    finally:
        for fd in fds:
            loop.remove_reader(fd)


def limits_for(task: Task) -> dict[str, Any]:
    """The memory (bytes) and cpu (cores) limits of one run, from the task's Resources."""
    res = task.resources
    if res is None:
        return {}
    return {"memory": res.memory_bytes, "cpu": res.cpu_cores}


def _lowest(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit]
    return min(given) if given else None


class ProcessExecutor:
    """A warm pool of `size` spawned interpreters running cpu_bound tasks, one run each.

    The pool starts with the executor (the manager starts it at the first cpu_bound run) and
    stays warm; a child is replaced when it is killed (timeout, cancel), dies, or has served
    `max_tasks_per_child` runs. Children see `TASK_MANAGER_SPAWN=true`. `kill_grace` is the
    time between SIGTERM and SIGKILL; `boot_timeout` bounds a new child's start-up.
    """

    name = "process"

    def __init__(
        self,
        size: int | None = None,
        max_tasks_per_child: int | None = None,
        start_method: str = "spawn",
        *,
        kill_grace: float = 1.0,
        boot_timeout: float = 60.0,
    ) -> None:
        if start_method not in START_METHODS:
            # fork would copy the worker's event loop, threads and locks into the child.
            raise ConfigError(
                f"start_method must be one of {', '.join(START_METHODS)}, got {start_method!r}"
            )
        if size is not None and size < 1:
            raise ConfigError(f"ProcessExecutor size must be >= 1, got {size}")
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ConfigError(f"max_tasks_per_child must be >= 1, got {max_tasks_per_child}")
        self.size = size or min(os.cpu_count() or 1, 4)
        self.max_tasks_per_child = max_tasks_per_child
        self.start_method = start_method
        self.kill_grace = kill_grace
        self.boot_timeout = boot_timeout
        self._context: SpawnContext | ForkServerContext = (
            multiprocessing.get_context("spawn")
            if start_method == "spawn"
            else multiprocessing.get_context("forkserver")
        )
        self._children: set[_Child] = set()  # every live child, idle or running
        self._idle: list[_Child] = []
        self._slots: asyncio.Semaphore | None = None
        self._reapers: set[asyncio.Task[None]] = set()  # kills that outlive their caller
        self._started = False
        self._memory: tuple[int | None, int | None] = (None, None)

    # -- memory ---------------------------------------------------------------------------------
    def set_memory_limit(
        self, soft_limit: int | str | None, hard_limit: int | str | None = None
    ) -> None:
        """Cap the address space of every run (bytes or a quantity such as '512Mi').

        A run past `soft_limit` fails with `OutOfMemoryError`; a task's own lower
        `Resources(memory=...)` still wins. `hard_limit` also lowers the children's hard
        rlimit, which a process can never raise again: children are replaced to lift it.
        """
        soft, hard = parse_memory(soft_limit), parse_memory(hard_limit)
        for name, value in (("soft_limit", soft), ("hard_limit", hard)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0 bytes, got {value}")
        if soft is not None and hard is not None and soft > hard:
            raise ConfigError(f"soft_limit ({soft}) must not exceed hard_limit ({hard})")
        self._memory = (soft, hard)
        if self._started:
            for child in list(self._idle):  # idle children may carry an older hard limit
                self._idle.remove(child)
                self._children.discard(child)
                self._background(self._kill(child, polite=True))
                self._idle.append(self._spawn())

    @staticmethod
    def oom(
        failure: TaskRun | TaskFailedError | dict[str, Any] | None,
        nonzero_exitcode_as_oom: bool = False,
    ) -> bool:
        """True if a run (or its error) failed for lack of memory: `OutOfMemoryError`, or
        with `nonzero_exitcode_as_oom` also a child that died (often the kernel's OOM killer)."""
        if isinstance(failure, TaskRun):
            failure = failure.error
        if isinstance(failure, TaskFailedError):
            failure = failure.to_dict()
        kind = (failure or {}).get("type")
        return kind == "OutOfMemoryError" or (
            nonzero_exitcode_as_oom and kind == "ProcessDiedError"
        )

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children (idle or running)."""
        return sorted(c.pid for c in self._children if c.pid is not None)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the pool; the children boot in the background while the caller goes on."""
        if self._started:
            return
        self._started = True
        self._slots = asyncio.Semaphore(self.size)
        for _ in range(self.size):
            self._idle.append(self._spawn())

    async def stop(self) -> None:
        """Stop idle children politely, SIGKILL running ones, and reap every child."""
        self._started = False
        idle, self._idle = self._idle, []
        for child in self._children - set(idle):
            # A running child belongs to the call awaiting it: that call sees the death and
            # reaps it; here it only has to end now.
            with contextlib.suppress(ProcessLookupError, ValueError):
                child.process.kill()
        self._children -= set(idle)
        await asyncio.gather(
            *(self._kill(c, polite=True) for c in idle), *self._reapers, return_exceptions=True
        )
        self._slots = None

    def _spawn(self) -> _Child:
        used = {c.slot for c in self._children}
        slot = next(i for i in range(len(used) + 1) if i not in used)
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(theirs, slot), name=f"taskloom-cpu-{slot}", daemon=True
        )
        process.start()
        theirs.close()  # only the child holds its end now, so its death reads as EOF here
        child = _Child(process, ours, slot, process.pid)
        self._children.add(child)
        return child

    # -- one run --------------------------------------------------------------------------------
    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Run one attempt in a pool child; kill the child on timeout or cancel."""
        request = build_request(task, run, kwargs)
        if task.interface.secret_fields:  # the plain values go over this private pipe only
            request["secret_params"] = secret_values(kwargs, task.interface.secret_fields)
        request["address"] = task_address(task)
        request["env"] = dict(task.env)
        limits = request["limits"] = limits_for(task)
        soft, hard = self._memory
        if soft is not None or hard is not None:
            limits["memory"] = _lowest(limits.get("memory"), soft, hard)
            limits["memory_hard"] = hard
        await self.start()
        assert self._slots is not None
        async with self._slots:
            child = await self._checkout(task, run)
            try:
                reply = await with_timeout(self._call(child, request, run, env), timeout, task.name)
            except _Gone:
                await self._discard(child, replace=True)
                raise ProcessDiedError(
                    f"the process running task {task.name!r} (pid {child.pid}) "
                    f"{describe_exit(child.exitcode)}",
                    pid=child.pid, exitcode=child.exitcode, run_id=run.id,
                ) from None  # fmt: skip
            except BaseException:  # timeout, cancel: the child may still be working
                await self._discard(child, replace=True)
                raise
            self._checkin(child)
        take_report(run, reply)
        error = reply.get("error") or {}
        if not reply.get("ok") and error.get("type") == "MemoryError":
            limit = limits.get("memory")
            raise OutOfMemoryError(
                f"task {task.name!r} ran out of memory"
                + (f" (limit {limit} bytes of address space)" if limit else ""),
                limit=limit, run_id=run.id,
            ) from TaskFailedError.from_dict(error)  # fmt: skip
        return value_of(task, reply)

    async def _checkout(self, task: Task, run: TaskRun) -> _Child:
        """An idle, booted child (spawned if none is idle)."""
        while self._idle:
            child = next((c for c in reversed(self._idle) if c.ready), self._idle[-1])
            self._idle.remove(child)
            if not child.exited():
                break
            await self._discard(child, replace=False)  # died while idle: try another
        else:
            child = self._spawn()
        if child.ready:
            return child
        try:
            message = await asyncio.wait_for(self._recv(child), self.boot_timeout)
            if message.get("kind") != "ready":
                raise _Gone
        except BaseException as exc:
            # No replacement: a child that cannot boot would fail the same way again.
            await self._discard(child, replace=False)
            if isinstance(exc, _Gone | TimeoutError):
                why = (
                    f"did not start within {self.boot_timeout:g}s"
                    if isinstance(exc, TimeoutError)
                    else f"{describe_exit(child.exitcode)} while starting"
                )
                raise ProcessDiedError(
                    f"the process for task {task.name!r} (pid {child.pid}) {why}",
                    pid=child.pid, exitcode=child.exitcode, run_id=run.id,
                ) from None  # fmt: skip
            raise
        child.ready = True
        return child

    async def _call(self, child: _Child, request: Request, run: TaskRun, env: RunEnv) -> Reply:
        data = serde.dumps(request)
        try:
            if len(data) > _INLINE_SEND_BYTES:
                await asyncio.to_thread(child.conn.send_bytes, data)
            else:
                child.conn.send_bytes(data)
        except OSError:
            raise _Gone from None
        while True:
            message = await self._recv(child)
            kind = message.get("kind")
            if kind != "progress" and kind != "log":
                return message
            if message.get("run_id") != run.id:
                continue  # a thread of the previous run reporting after it returned
            if kind == "log":
                replay_record(run, message)
                continue
            run.progress, run.progress_note = message.get("progress"), message.get("note")
            env.heartbeat()

    async def _recv(self, child: _Child) -> dict[str, Any]:
        """The child's next message; raises _Gone if it died first."""
        try:
            while not child.conn.poll():
                if child.exited():
                    raise _Gone
                await _readable(child.conn.fileno(), child.process.sentinel)
            message: dict[str, Any] = serde.loads(child.conn.recv_bytes())
        except (EOFError, OSError):
            raise _Gone from None
        return message

    def _checkin(self, child: _Child) -> None:
        child.runs += 1
        retire = self.max_tasks_per_child is not None and child.runs >= self.max_tasks_per_child
        if self._started and not retire:
            self._idle.append(child)
            return
        self._children.discard(child)
        self._background(self._kill(child, polite=True))
        if self._started:
            self._idle.append(self._spawn())

    # -- ending children ------------------------------------------------------------------------
    async def _discard(self, child: _Child, *, replace: bool) -> None:
        """Kill and reap `child` (even if our caller is cancelled again) and maybe replace it."""
        self._children.discard(child)
        reaper = self._background(self._kill(child))
        try:
            await asyncio.shield(reaper)
        finally:
            if replace and self._started:
                self._idle.append(self._spawn())

    def _background(self, coro: Any) -> asyncio.Task[None]:
        reaper: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._reapers.add(reaper)  # keep a reference: the loop holds tasks only weakly
        reaper.add_done_callback(self._reapers.discard)
        return reaper

    async def _kill(self, child: _Child, *, polite: bool = False) -> None:
        """Ask (stop message), then SIGTERM, then SIGKILL after `kill_grace`; reap the child."""
        process = child.process
        if polite and not child.exited():
            with contextlib.suppress(OSError):
                child.conn.send_bytes(_STOP)
            await self._exit_within(child, self.kill_grace)
        if not child.exited():
            process.terminate()
            if not await self._exit_within(child, self.kill_grace):
                process.kill()
                await self._exit_within(child, None)
        process.join()  # returns at once: the child has exited; this reaps it
        child.exitcode = process.exitcode
        child.conn.close()
        process.close()

    async def _exit_within(self, child: _Child, timeout: float | None) -> bool:
        if child.exited():
            return True
        try:
            await asyncio.wait_for(_readable(child.process.sentinel), timeout)
        except TimeoutError:
            return False
        return True
