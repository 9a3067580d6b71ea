"""Task kinds: what one job of a pipeline task does once the pipeline has launched it.

`PipelineTask` holds everything the pipeline loop needs (links, `ready`, resources, retry
policy, timeout); a kind only implements `execute(job, run)`, which runs inside the job's
taskloom run and raises to fail the attempt. A new kind (a Kubernetes pod, a remote function)
is a subclass: the loop never changes.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from ..policies import Resources, RetryPolicy
from ..run import TaskRun
from .links import Link, check_name, plugged_links
from .repositories import (
    And,
    FileRepository,
    KeySet,
    LiveRepository,
    Not,
    Or,
    Repository,
)
from .views import FileView, LoopView, SyncRepository

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .quotas import ResourceManager

JobBody = Callable[..., Awaitable[Any]]


class PipelineTask(ABC):
    """The base of every task kind.

    Every task links `done` (status, inhibits_start, required_for_output: the pipeline
    records each job's lifetime and exit there) and `live` (status, inhibits_start,
    inhibits_output: jobs with a run in flight). `retry` is the taskloom `RetryPolicy` of
    each job's run (an int means that many retries); `timeout` kills an attempt that runs
    longer; `resources` is what one job charges against the pipeline's quotas.
    `disabled=True` keeps the task in the pipeline (its links, its status) but it is never
    launched. Each pass of the pipeline loop calls `update()` then `launch(job)` for every
    ready job the quotas allow; a subclass may override either.
    """

    kind: ClassVar[str] = "task"

    def __init__(
        self,
        name: str,
        *,
        done: Repository,
        ready: KeySet | None = None,
        resources: Resources | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        disabled: bool = False,
    ) -> None:
        self.name = check_name("task", name)
        self.disabled = disabled
        self.quotas: list[ResourceManager] = []  # quotas this task brought (see Pipeline)
        self.pipeline: Pipeline | None = None  # set when a pipeline opens with this task
        self.resources = resources
        self.retry = RetryPolicy.from_retries(retry) if isinstance(retry, int) else retry
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.links: dict[str, Link] = {}
        self.live = LiveRepository(f"{name}.live")
        self._ready = ready
        self.link("done", done, is_status=True, inhibits_start=True, required_for_output=True)
        self.link("live", self.live, is_status=True, inhibits_start=True, inhibits_output=True)

    # -- wiring ---------------------------------------------------------------------------------
    def link(
        self,
        name: str,
        repo: Repository,
        *,
        is_input: bool = False,
        is_output: bool = False,
        is_status: bool = False,
        inhibits_start: bool = False,
        required_for_start: bool | None = None,
        inhibits_output: bool = False,
        required_for_output: bool | None = None,
    ) -> Link:
        """Link a repository under `name` (the keyword the job body receives it as)."""
        check_name("link", name)
        if name in self.links:
            raise ConfigError(f"task {self.name!r} already has a link named {name!r}")
        link = Link.make(
            repo, is_input=is_input, is_output=is_output, is_status=is_status,
            inhibits_start=inhibits_start, required_for_start=required_for_start,
            inhibits_output=inhibits_output, required_for_output=required_for_output,
        )  # fmt: skip
        self.links[name] = link
        return link

    def plug(
        self,
        upstream: PipelineTask,
        output_links: Iterable[str] | None = None,
        meta: bool = True,
        translator: Repository | None = None,
        translate_allow_deletes: bool = False,
        translate_prefetch_lookup: bool = True,
    ) -> list[str]:
        """Take `upstream`'s outputs as inputs (see `links.plugged_links`); returns the names
        of the new links, `<upstream>_<link>`. With a `translator`,
        `translate_allow_deletes` lets deletes through the translated view reach the
        upstream repository, and `translate_prefetch_lookup` fetches every translation on
        first access (then only new ones) instead of looking each key up every time."""
        new = plugged_links(
            upstream.name, upstream.links, output_links, meta, translator,
            allow_deletes=translate_allow_deletes, prefetch_lookup=translate_prefetch_lookup,
        )  # fmt: skip
        if clash := sorted(set(new) & set(self.links)):
            raise ConfigError(f"task {self.name!r} already has links {', '.join(clash)}")
        self.links.update(new)
        return list(new)

    @property
    def ready(self) -> KeySet:
        """Jobs that may launch: the override given as `ready=`, else
        AND(required_for_start) minus OR(inhibits_start)."""
        if self._ready is not None:
            return self._ready
        required = list(self.required_for_start.values())
        inhibiting = list(self.inhibits_start.values())
        return And(*required, Not(Or(*inhibiting))) if inhibiting else And(*required)

    @property
    def run_timeout(self) -> float | None:
        """The timeout of each job's taskloom run (a kind that times jobs out itself says
        None)."""
        return self.timeout

    @property
    def has_ready_override(self) -> bool:
        """True if `ready=` replaced the default ready set."""
        return self._ready is not None

    def _where(self, flag: str) -> dict[str, Repository]:
        return {name: link.repo for name, link in self.links.items() if getattr(link, flag)}

    @property
    def input(self) -> dict[str, Repository]:
        """Links marked is_input, by name."""
        return self._where("is_input")

    @property
    def output(self) -> dict[str, Repository]:
        """Links marked is_output, by name."""
        return self._where("is_output")

    @property
    def status(self) -> dict[str, Repository]:
        """Links marked is_status, by name."""
        return self._where("is_status")

    @property
    def inhibits_start(self) -> dict[str, Repository]:
        """Links marked inhibits_start, by name."""
        return self._where("inhibits_start")

    @property
    def required_for_start(self) -> dict[str, Repository]:
        """Links marked required_for_start, by name."""
        return self._where("required_for_start")

    @property
    def inhibits_output(self) -> dict[str, Repository]:
        """Links marked inhibits_output, by name."""
        return self._where("inhibits_output")

    @property
    def required_for_output(self) -> dict[str, Repository]:
        """Links marked required_for_output, by name."""
        return self._where("required_for_output")

    @property
    def done(self) -> Repository:
        """Where the pipeline records each finished job."""
        return self.links["done"].repo

    @property
    def upstreams(self) -> set[str]:
        """Names of the tasks this one is plugged into."""
        return {link.upstream for link in self.links.values() if link.upstream is not None}

    # -- lifecycle ------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with this task's configuration (empty when nothing is)."""
        if self._ready is None and not self.required_for_start:
            return ["no link is required_for_start and no ready= override: it never launches"]
        return []

    async def setup(self) -> None:  # noqa: B027 - an optional hook, like RunHooks
        """Called once when the pipeline opens, before any job runs."""

    async def teardown(self) -> None:  # noqa: B027 - an optional hook, like RunHooks
        """Called once when the pipeline closes."""

    async def update(self) -> bool:
        """Part one of each pass, before jobs are reaped and launched: maintenance of this
        task's live jobs. Return True if anything happened or something is still live, so
        the loop keeps going. The default does nothing (taskloom runs reap themselves)."""
        return False

    async def launch(self, job: str) -> None:
        """Part two of each pass, for every ready job the quotas allow: start `job`. The
        default queues the job's taskloom run (the loop sends one pass's runs together);
        an override may do its own thing, then call `super().launch(job)` or not. If it
        raises, or queues nothing, the job's quota charge is returned and it stays ready."""
        if self.pipeline is None:
            raise ConfigError(f"task {self.name!r} is not in an open pipeline")
        self.pipeline.stage_launch(self, job)

    @abstractmethod
    async def execute(self, job: str, run: TaskRun) -> Any:
        """Run one attempt of `job` inside its taskloom run; return a JSON-able value to
        keep in the done record, raise to fail the attempt."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _link_params(fn: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool]:
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the job key
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, takes_all


def body_problems(
    task: PipelineTask, fn: Callable[..., Any] | None, *, is_async: bool
) -> list[str]:
    """Checks shared by the kinds that call a function `fn(job, **links)`."""
    if fn is None:
        return ["has no body: pass func= or use the task as a decorator"]
    if is_async and not inspect.iscoroutinefunction(fn):
        return [f"body {fn.__name__!r} must be an async def"]
    if not is_async and inspect.iscoroutinefunction(fn):
        return [f"body {fn.__name__!r} must be a plain (sync) def"]
    out = []
    named, _ = _link_params(fn)
    for p in named:
        if p.name not in task.links and p.default is p.empty:
            out.append(f"body takes {p.name!r}, which is not a link (links: "
                       f"{', '.join(sorted(task.links))})")  # fmt: skip
    return out


def link_kwargs(task: PipelineTask, fn: Callable[..., Any]) -> dict[str, Repository]:
    """The links `fn` asks for by name, or every link if it takes `**links`."""
    named, takes_all = _link_params(fn)
    if takes_all:
        return {name: link.repo for name, link in task.links.items()}
    return {p.name: task.links[p.name].repo for p in named if p.name in task.links}


class _WithBody(PipelineTask):
    """A kind whose job is a Python function; also usable as a decorator of that function."""

    body_is_async: ClassVar[bool] = True

    def __init__(self, name: str, *, func: Callable[..., Any] | None, **options: Any) -> None:
        super().__init__(name, **options)
        self.func = func

    def __call__(self, func: Callable[..., Any]) -> _WithBody:
        """`@InProcessTask("name", done=repo)` over the body sets it and returns the task."""
        self.func = func
        return self

    def problems(self) -> list[str]:
        return super().problems() + body_problems(self, self.func, is_async=self.body_is_async)


class InProcessTask(_WithBody):
    """A job is `await func(job, **links)` in the pipeline's event loop.

    The body receives the links it names as keyword arguments (all of them if it takes
    `**links`). Its return value is ignored: write results to output repositories.
    """

    kind = "in-process"

    def __init__(
        self,
        name: str,
        done: Repository,
        func: JobBody | None = None,
        resources: Resources | None = None,
        *,
        ready: KeySet | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            name, func=func, done=done, ready=ready, resources=resources, retry=retry,
            timeout=timeout, disabled=disabled,
        )  # fmt: skip

    async def execute(self, job: str, run: TaskRun) -> Any:
        """Await the body."""
        if self.func is None:
            raise ConfigError(f"task {self.name!r} has no body")
        await self.func(job, **link_kwargs(self, self.func))
        return None


class ExecutorTask(_WithBody):
    """A job is the sync `func(job, **links)` run on a `concurrent.futures` executor.

    Links arrive as blocking views (`views.SyncRepository`). In a thread pool every
    repository works (calls hop back to the pipeline's loop); in a process pool only file
    repositories can cross the boundary. A timeout fails the attempt but cannot stop a
    function already running in a thread or process; use `ProcessTask` for killable jobs.
    """

    kind = "executor"
    body_is_async = False

    def __init__(
        self,
        name: str,
        executor: Executor,
        done: Repository,
        func: Callable[..., Any] | None = None,
        resources: Resources | None = None,
        *,
        ready: KeySet | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            name, func=func, done=done, ready=ready, resources=resources, retry=retry,
            timeout=timeout, disabled=disabled,
        )  # fmt: skip
        self.executor = executor

    @property
    def in_processes(self) -> bool:
        """True when jobs run in other processes (only file links can follow them)."""
        return isinstance(self.executor, ProcessPoolExecutor)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.in_processes and self.func is not None:
            for name, repo in link_kwargs(self, self.func).items():
                if not isinstance(repo, FileRepository):
                    out.append(f"link {name!r} ({type(repo).__name__}) cannot cross into a "
                               "process pool: use a FileRepository or a thread pool")  # fmt: skip
        return out

    def _views(self, loop: asyncio.AbstractEventLoop) -> dict[str, SyncRepository]:
        assert self.func is not None
        views: dict[str, SyncRepository] = {}
        for name, repo in link_kwargs(self, self.func).items():
            if self.in_processes and isinstance(repo, FileRepository):
                views[name] = FileView.of(repo)
            else:
                views[name] = LoopView(repo, loop)
        return views

    async def execute(self, job: str, run: TaskRun) -> Any:
        """Run the body on the executor and wait for it."""
        if self.func is None:
            raise ConfigError(f"task {self.name!r} has no body")
        loop = asyncio.get_running_loop()
        call = functools.partial(self.func, job, **self._views(loop))
        await loop.run_in_executor(self.executor, call)
        return None
