"""The main loop of a process-pool child: read a request from the pipe, run it, answer.

Everything the child needs arrives over its pipe as JSON (orjson): never in argv or the
environment, so params cannot leak through `/proc/<pid>/cmdline` or `environ`.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from .. import serde
from ..runlog import forwarded_records
from .remote import Reply, error_reply, locate, run_request


class _Sender:
    """Writes whole messages; a task thread reporting progress may race the main thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, message: Mapping[str, Any]) -> None:
        data = serde.dumps(message)
        with self._lock:
            self._conn.send_bytes(data)


@contextmanager
def applied_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set the task's environment variables for one run and put the old values back."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def memory_limit(limit: int | None, hard_limit: int | None = None) -> Iterator[None]:
    """Lower the soft RLIMIT_AS to `limit` bytes for one run (address space, not RSS).

    `hard_limit` lowers the hard limit too, for good: no unprivileged process can raise it.
    """
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to enforce with
        limit = hard_limit = None
    if not limit and not hard_limit:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard_limit and (hard == resource.RLIM_INFINITY or hard_limit < hard):
        hard = hard_limit
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
    new = limit or hard
    new = new if hard == resource.RLIM_INFINITY else min(new, hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def pick_cores(allowed: set[int], count: int, slot: int) -> set[int]:
    """`count` of the `allowed` cores, starting at an offset per pool slot so children spread."""
    cores = sorted(allowed)
    if count >= len(cores):
        return set(cores)
    start = (slot * count) % len(cores)
    return {cores[(start + i) % len(cores)] for i in range(count)}


@contextmanager
def cpu_affinity(cpu: float | None, slot: int) -> Iterator[None]:
    """Pin the child to `ceil(cpu)` cores for one run (Linux), then restore its affinity."""
    if not cpu or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, pick_cores(before, max(1, math.ceil(cpu)), slot))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def run_scope(request: Mapping[str, Any], slot: int) -> Iterator[None]:
    """Environment, memory limit and cpu affinity of one run, all undone afterwards."""
    limits = request.get("limits") or {}
    with (
        applied_env(request.get("env") or {}),
        cpu_affinity(limits.get("cpu"), slot),
        memory_limit(limits.get("memory"), limits.get("memory_hard")),
    ):
        yield


def handle(request: Mapping[str, Any], slot: int, send: _Sender) -> Reply:
    """Run one request from the parent and return the reply to send back."""
    run_id = (request.get("run") or {}).get("id")
    try:
        task = locate(request["address"])
    except BaseException as exc:  # a module failing to import fails the run
        return error_reply(exc, run_id)

    def progress(fraction: float | None, note: str | None) -> None:
        send({"kind": "progress", "run_id": run_id, "progress": fraction, "note": note})

    with forwarded_records(task, run_id, send):
        return run_request(
            task, dict(request), scope=lambda: run_scope(request, slot), on_progress=progress
        )


def child_main(conn: Connection, slot: int) -> None:
    """Entry point of a pool child (importable, so every start method can find it)."""
    # Set before any task module is imported, so import-time checks see it too.
    os.environ["TASK_MANAGER_SPAWN"] = "true"
    # The parent decides when a run stops (timeout, cancel, drain); Ctrl-C in a terminal
    # reaches the whole process group and must not kill runs behind the worker's back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Children are daemonic so the worker's interpreter terminates them at exit instead of
    # waiting on them; un-mark this one so a task may still start processes of its own.
    multiprocessing.current_process().daemon = False
    send = _Sender(conn)
    send({"kind": "ready", "pid": os.getpid()})
    while True:
        try:
            request = serde.loads(conn.recv_bytes())
        except EOFError:  # the worker went away: nothing left to serve
            return
        if request.get("kind") == "stop":
            return
        send(handle(request, slot, send))
