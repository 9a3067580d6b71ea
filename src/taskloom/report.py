"""Run reports (Flyte's `report=True`): what a task adds with `ctx.report(...)`, as one page.

A task declared with `report=True` calls `ctx.report(text)` (Markdown, or HTML when the text
starts with `<`) any number of times. The parts travel with the attempt (over the pipe from a
pool child), and `ReportHooks` stores them once the attempt ends, under `report_key(run id)`.
The API serves them as `GET /api/runs/{id}/report`, rendered by `render_report`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import serde
from .hooks import RunHooks

if TYPE_CHECKING:
    from .errors import TaskFailedError
    from .run import TaskRun
    from .store.base import Store

ReportFormat = Literal["auto", "markdown", "html"]

# A report outlives its run record by default settings; the store's kv TTL bounds it.
REPORT_TTL_SECONDS = 30 * 24 * 3600.0


def report_key(run_id: str) -> str:
    """The store kv key holding a run's report parts."""
    return f"report:{run_id}"


def report_part(content: str, fmt: ReportFormat = "auto") -> dict[str, str]:
    """One part of a report: `{"format": "html" | "markdown", "content": ...}`."""
    if fmt not in ("auto", "markdown", "html"):
        from .errors import ConfigError

        raise ConfigError(f"report format must be auto, markdown or html, got {fmt!r}")
    if fmt == "auto":
        fmt = "html" if content.lstrip().startswith("<") else "markdown"
    return {"format": fmt, "content": str(content)}


async def save_report(
    store: Store, run: TaskRun, clock: Callable[[], float], parts: Sequence[dict[str, str]]
) -> None:
    """Store the parts of `run`'s latest attempt (a new attempt's report replaces the old)."""
    await store.kv_set(report_key(run.id), serde.dumps(list(parts)), REPORT_TTL_SECONDS, clock())


async def load_report(store: Store, run_id: str, now: float) -> list[dict[str, str]] | None:
    """The stored parts of a run's report, or None when it reported nothing."""
    raw = await store.kv_get(report_key(run_id), now)
    return None if raw is None else list(serde.loads(raw))


class ReportHooks(RunHooks):
    """Stores the report of each attempt that made one (the manager adds it when a task with
    `report=True` is registered)."""

    def __init__(self, store: Callable[[], Store], clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        """Save what the attempt reported, if anything."""
        parts = run._report
        if parts:
            await save_report(self._store(), run, self._clock, parts)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d2433; }}
header {{ border-bottom: 1px solid #d5dae3; margin-bottom: 1.5rem; }}
header p {{ color: #5b6475; margin: .25rem 0 1rem; }}
pre, code {{ background: #f3f5f8; border-radius: 4px; }}
pre {{ padding: .75rem; overflow-x: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #d5dae3; padding: .3rem .6rem; }}
section + section {{ margin-top: 1.5rem; }}
</style></head>
<body><header><h1>{task}</h1><p>run {run_id} &middot; {state}</p></header>
{body}
</body></html>
"""


def _markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    # Raw HTML inside Markdown stays text: HTML is a part of its own ("html" format).
    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def render_report(run: TaskRun, parts: Sequence[dict[str, Any]]) -> str:
    """The report page of `run`: its parts in order, Markdown rendered, HTML as given.

    Serve it sandboxed (`Content-Security-Policy: sandbox`): a task's HTML is its author's.
    """
    sections = []
    for part in parts:
        content = str(part.get("content", ""))
        body = content if part.get("format") == "html" else _markdown(content)
        sections.append(f"<section>{body}</section>")
    if not sections:
        sections.append("<p>This run has not reported anything yet.</p>")
    return _PAGE.format(
        title=html.escape(f"{run.task} report"), task=html.escape(run.task),
        run_id=html.escape(run.id), state=html.escape(str(run.state.value)),
        body="\n".join(sections),
    )  # fmt: skip
