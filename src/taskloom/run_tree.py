"""A run and its child runs as a `rich` tree (what `taskloom show RUN` prints)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from rich.tree import Tree

from .run import TaskRun, TaskState
from .store.base import ts

if TYPE_CHECKING:
    from .manager import TaskManager

STATE_STYLES: dict[TaskState, str] = {
    TaskState.init: "dim",
    TaskState.queued: "cyan",
    TaskState.running: "bold yellow",
    TaskState.success: "green",
    TaskState.failure: "bold red",
    TaskState.aborted: "magenta",
    TaskState.rate_limited: "yellow",
    TaskState.interrupted: "dark_orange",
}


async def run_tree(
    manager: TaskManager, run_id: str, *, max_children: int = 200, max_depth: int | None = None
) -> Tree:
    """The run `run_id` and its children, recursively, with coloured states and timings.

    Each run shows at most `max_children` children (a last line counts what was left out);
    `max_depth` stops the descent (None: no limit). Raises `RunNotFoundError`.
    """
    root = await manager.get_run(run_id)
    tree = Tree(run_label(root, manager.clock()))
    await _add_children(manager, tree, root, max_children, max_depth, 1)
    return tree


async def _add_children(
    manager: TaskManager, node: Tree, run: TaskRun, limit: int, max_depth: int | None, depth: int
) -> None:
    if max_depth is not None and depth > max_depth:
        return
    children = await manager.runs(parent_id=run.id, limit=limit + 1)
    more = len(children) > limit
    # ids of children are hashes of their call position, not times: order by when they ran
    children = sorted(children[:limit], key=lambda r: (ts(r.start or r.queued) or 0.0, r.id))
    now = manager.clock()
    for child in children:
        branch = node.add(run_label(child, now))
        await _add_children(manager, branch, child, limit, max_depth, depth + 1)
    if more:
        node.add(Text(f"… more children (first {limit} shown)", style="dim"))


def run_label(run: TaskRun, now: float) -> Text:
    """One line for a run: task, state, timing, short id, and the error if it failed."""
    label = Text()
    label.append(run.task, style="bold")
    label.append(" ")
    label.append(str(run.state), style=STATE_STYLES.get(run.state, ""))
    timing = _timing(run, now)
    if timing:
        label.append(f" {timing}")
    if run.cache_hit:
        label.append(" cache hit", style="blue")
    if run.retry_attempt:
        label.append(f" retry {run.retry_attempt}", style="yellow")
    label.append(f"  {run.id}", style="dim")
    if run.error and run.state.is_failure:
        message = str(run.error.get("message", ""))
        first = message.splitlines()[0] if message else ""
        label.append(f"\n{run.error.get('type', 'Error')}: {first[:200]}", style="red")
    return label


def _timing(run: TaskRun, now: float) -> str:
    start, end = ts(run.start), ts(run.end)
    if start is not None and end is not None:
        return format_seconds(end - start)
    if start is not None and run.state is TaskState.running:
        return f"running for {format_seconds(max(now - start, 0.0))}"
    return ""


def format_seconds(seconds: float) -> str:
    """A short human duration: 850µs, 12.3ms, 4.56s, 3m07s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"
