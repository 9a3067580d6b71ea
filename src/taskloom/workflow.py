"""Child runs: a task called inside a running task becomes a durable child run.

A child's id is deterministic: the parent's time prefix, a hash of (parent id, call position)
and a hash of the child's inputs, so a retried parent that makes the same calls in the same
order finds its earlier children by id and reuses those that finished (replay), while one that
calls something else at a position fails loudly with `ReplayMismatchError`.

Children run inline by default: recorded, executed here through `runner.attempt` on the
manager's executors, and saved, with no queue round trip. A fresh parent's child that ends
within its event-loop turn costs one store write, shared with its siblings; a longer one, or a
replayed parent's, two (`running`, then final). A child whose task
names another queue than its parent's, or any child under `TaskManager(children_on_queue=True)`,
is queued for the workers instead and awaited with `manager.wait`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ReplayMismatchError, TaskFailedError
from .interface import input_hash
from .run import TaskRun, TaskState
from .store.base import RunQuery

if TYPE_CHECKING:
    from .manager import TaskManager
    from .task import Task

# An id is 12 hex of the parent's time prefix + 12 hex of the call position + 8 hex of the
# inputs: the first 24 name the position, so one query finds whatever a position held before.
_POSITION_HEX = 24
_HEX_STAMP = re.compile(r"[0-9a-f]{12}")
_ATTEMPT_SHIFT = 32


def child_run_id(parent_id: str, position: int, digest: str) -> str:
    """The id of the child at `position` of `parent_id` called with inputs hashing to `digest`.

    Children keep their parent's time prefix, so newest-first listings show a family together.
    """
    stamp = parent_id[:12]
    if not _HEX_STAMP.fullmatch(stamp):
        stamp = hashlib.blake2b(parent_id.encode(), digest_size=6).hexdigest()
    slot = hashlib.blake2b(f"{parent_id}:{position}".encode(), digest_size=6).hexdigest()
    return f"{stamp}{slot}{digest[:8]}"


def next_position(parent: TaskRun) -> int:
    """Take the parent's next call position (0, 1, 2, ... within one attempt).

    Called before any await, so children started by one `asyncio.gather` get the positions of
    their order in the gather on every attempt. The counter lives on the run object, which
    `manager.execute_run` reuses from one attempt to the next: its high bits hold the attempt
    it counts for, so it restarts at 0 with every attempt.
    """
    base = len(parent.attempts) << _ATTEMPT_SHIFT
    index = max(parent._child_index, base)
    parent._child_index = index + 1
    return index - base


def call_child(
    parent: TaskRun, task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Coroutine[Any, Any, Any]:
    """Run `task` as a child of `parent`: awaiting this returns its typed result (or raises
    its failure). The call position is taken now, in call order."""
    return _call(parent, task, next_position(parent), args, kwargs)


def call_child_sync(
    parent: TaskRun, task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """`call_child` from a worker thread: hop to the manager's loop and block for the result."""
    loop = parent.manager.loop
    if loop is None:
        raise RuntimeError("manager is not connected")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            f"sync task {task.name!r} called from async code: use `await {task.name}.aio(...)`"
        )
    position = next_position(parent)  # here, in call order, not when the loop gets to it
    future = asyncio.run_coroutine_threadsafe(_call(parent, task, position, args, kwargs), loop)
    return future.result()


def goes_on_queue(manager: TaskManager, parent: TaskRun, task: Task) -> bool:
    """True if the child is queued for workers rather than executed inline."""
    return manager.children_on_queue or task.queue != parent.queue


async def _call(
    parent: TaskRun, task: Task, position: int, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    manager = parent.manager
    task = manager.resolve(task)
    # InvalidParamsError, PayloadTooLargeError: nothing ran
    params = task.validate_params(task.interface.bind(args, kwargs))[1]
    digest = input_hash(params)
    on_queue = goes_on_queue(manager, parent, task)
    if on_queue:
        manager.get_task(task.name)  # workers resolve the task by name: it must be registered
    lifecycle = manager.lifecycle
    run = lifecycle.build_here(
        task, params, parent=parent, worker=parent.worker,
        run_id=child_run_id(parent.id, position, digest),
    )  # fmt: skip
    if on_queue:
        run.state, run.start, run.worker = TaskState.queued, None, None
    prior = await _prior(manager, parent, task, run, position, digest) if parent.attempts else None
    started = None
    fresh = not parent.attempts and not on_queue and await lifecycle.children_fresh(parent)
    if fresh:
        # no earlier execution of the parent left children: nothing to replay, so the child
        # runs while its record is written (once, finished, if it ends within the turn)
        started = await lifecycle.start_child(run)
    elif prior is None:
        stored = await lifecycle.submit_child(run)
        if stored is not run:  # the id exists: an earlier attempt of the parent made it
            _check_replay(parent, position, stored, task, digest)
            prior = stored
    if prior is not None:
        if prior.state is TaskState.success:
            return task.interface.decode_result(prior.result)
        if on_queue and not prior.is_done:
            run = prior  # still queued or running on a worker: wait for it
        else:
            run = await lifecycle.reopen(prior, on_queue=on_queue, worker=parent.worker)
    if on_queue:
        done = await manager.wait(run.id)
    else:
        done = await lifecycle.run_inline(task, run, started)
        del started  # settled: a fan-out's thousands of waiting children need not keep it
    if done.state is TaskState.success:
        return task.interface.decode_result(done.result)
    raise done.failure or TaskFailedError(
        f"child run {done.id} ({done.task}) ended {done.state}", run_id=done.id
    )


async def _prior(
    manager: TaskManager, parent: TaskRun, task: Task, run: TaskRun, position: int, digest: str
) -> TaskRun | None:
    """What this position held in an earlier attempt of the parent, if anything.

    The same call finds its child by id; only a miss asks which id the position held, if any
    (the highest child id below `prefix + "g"` starts with `prefix` when one does: hex digits
    sort below "g").
    """
    found = await manager.store.get(run.id)
    if found is None:
        prefix = run.id[:_POSITION_HEX]
        query = RunQuery(parent_id=parent.id, cursor=prefix + "g", limit=1)
        page = await manager.store.query(query)
        found = page[0] if page and page[0].id.startswith(prefix) else None
    if found is not None:
        _check_replay(parent, position, found, task, digest)
    return found


def _check_replay(parent: TaskRun, position: int, prior: TaskRun, task: Task, digest: str) -> None:
    if prior.task != task.name or input_hash(prior.params) != digest:
        raise ReplayMismatchError(
            f"run {parent.id} ({parent.task}) replayed call #{position} as {task.name} with "
            f"inputs {digest[:8]}, but an earlier attempt called {prior.task} with inputs "
            f"{input_hash(prior.params)[:8]} there (child run {prior.id}); the task must make "
            "the same calls in the same order on every attempt"
        )
