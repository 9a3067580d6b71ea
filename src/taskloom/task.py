"""`@task`, the immutable `Task`, and `TaskEnvironment` (shared defaults for several tasks)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Concatenate, Generic, Protocol, cast, overload

from pydantic import BaseModel
from typing_extensions import ParamSpec, TypeVar

from .errors import ConfigError, InvalidParamsError, ScheduleError
from .interface import Interface, check_size
from .policies import (
    Cache,
    CacheSpec,
    K8sConfig,
    Resources,
    RetryPolicy,
    Secret,
    Trigger,
    bound_secrets,
    to_cache,
)
from .ratelimit import RateLimit, parse_rate_limit
from .run import TaskPriority, TaskRun, current_run, reset_current_run, set_current_run
from .schedules import RandomizeType, Schedule, as_schedule, schedule_params
from .serializers import SerializerName, get_serializer
from .template import Documentation, ReusePolicy, TemplateHooks, to_reuse_policy

EXECUTORS = ("inline", "thread", "process", "kubernetes", "ray")

# Defaults keep a bare `Task` meaning "any task" in annotations (mypy --strict accepts it).
P = ParamSpec("P", default=...)
R = TypeVar("R", default=Any)


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(fn) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else ""
    return first, doc.strip()


@dataclass(frozen=True, eq=False)
class Task(TemplateHooks, Generic[P, R]):
    """A task definition: the function, its typed interface and its scheduling metadata.

    Generic over the function's parameters `P` and result `R` (the awaited result for an async
    function), so `add(1, 2)` type-checks as the declared return type.
    Immutable: `override(...)` returns a new Task. Calling it outside a running task runs the
    function locally; inside a running task it creates a durable child run.
    """

    name: str
    fn: Callable[P, Any] = field(repr=False)
    interface: Interface = field(repr=False)
    schedule: Schedule | None = None
    short_description: str = ""
    description: str = ""
    randomize: RandomizeType | None = None
    max_concurrency: int = 0
    priority: TaskPriority = TaskPriority.medium
    cpu_bound: bool = False
    k8s_config: K8sConfig | None = None
    timeout_seconds: float | None = None
    tags: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    rate_limit_retry: RetryPolicy | None = None
    rate_limit: RateLimit | None = None  # starts per window, across every worker
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources | None = None
    cache: Cache | None = None
    secrets: tuple[Secret, ...] = ()
    queue: str = "default"
    image: str | None = None
    pod_template: Mapping[str, Any] | None = None
    interruptible: bool = False
    max_inline_io_bytes: int = 10 * 1024 * 1024
    triggers: tuple[Trigger, ...] = ()
    report: bool = False
    reusable: ReusePolicy | None = None
    executor: str | None = None
    pre: Callable[..., Any] | None = field(default=None, repr=False)
    post: Callable[[Any], Any] | None = field(default=None, repr=False)
    short_name: str = ""
    task_type: str = "python"
    task_type_version: int = 0
    debuggable: bool = False
    parent_env: weakref.ReferenceType[TaskEnvironment] | None = field(default=None, repr=False)
    parent_env_name: str | None = None
    # how long finished runs are kept; None: the manager's retention; timedelta(0): forever
    retention: timedelta | None = None

    serializer: SerializerName | None = None

    def __post_init__(self) -> None:
        if not self.short_name:
            object.__setattr__(self, "short_name", self.name)
        if self.reusable is not None and self.executor not in (None, "process"):
            raise ConfigError(
                f"task {self.name!r}: reusable keeps warm processes, so it runs on the process "
                f"executor, not {self.executor!r}"
            )
        # the interface encodes with the task's serializer; None leaves the choice to the manager
        chosen = get_serializer(self.serializer)
        if self.interface.serializer is not chosen:
            object.__setattr__(
                self, "interface", dataclasses.replace(self.interface, serializer=chosen)
            )
        if self.schedule is not None:
            _check_schedule_params(self)

    @classmethod
    def from_function(cls, fn: Callable[..., Any], **opts: Any) -> Task:
        """Build a task of this class (a subclass overriding hooks) with `@task` options."""
        return make_task(fn, task_class=cls, **opts)

    @property
    def docs(self) -> Documentation:
        """The task's documentation (Flyte's `docs`): its short and long descriptions."""
        return Documentation(self.short_description, self.description)

    @property
    def native_interface(self) -> Interface:
        """The typed interface built from the function's signature."""
        return self.interface

    @property
    def source_file(self) -> str | None:
        """The file the task's function is defined in, when Python knows it."""
        try:
            return inspect.getsourcefile(self.fn)
        except TypeError:  # a builtin or C function
            return None

    def get_k8s_config(self) -> K8sConfig:
        """The task's `k8s_config`, else the default one from the TASKLOOM_K8S_* environment."""
        return self.k8s_config or K8sConfig()

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Call the bare function: no validation, no run context, no `pre`/`post`.

        An async function returns its coroutine. Use calling the task (or `forward`) for a
        validated, typed call.
        """
        return self.fn(*args, **kwargs)

    @functools.cached_property
    def is_async(self) -> bool:
        """True if the function is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def attempts(self) -> RetryPolicy:
        """The effective retry policy (one attempt when none is set)."""
        return self.retry or RetryPolicy(max_attempts=1)

    # -- copies ---------------------------------------------------------------------------------
    def override(self, **changes: Any) -> Task[P, R]:
        """A new Task with some settings changed; name, image, docs and interface are fixed."""
        for fixed in _FIXED:
            if fixed in changes:
                raise ConfigError(f"override() cannot change {fixed!r} of task {self.name!r}")
        return dataclasses.replace(self, **_normalise(changes))

    def _with(self, changes: Mapping[str, Any]) -> Task:
        return dataclasses.replace(self, **_normalise(changes)) if changes else self

    def info(self) -> TaskInfo:
        """A JSON-friendly description of the task."""
        return TaskInfo(
            name=self.name,
            short_description=self.short_description,
            description=self.description,
            schedule=str(self.schedule) if self.schedule else None,
            priority=self.priority,
            max_concurrency=self.max_concurrency,
            cpu_bound=self.cpu_bound,
            timeout_seconds=self.timeout_seconds,
            tags=list(self.tags),
            queue=self.queue,
            executor=self.executor_name(),
            max_attempts=self.attempts.max_attempts,
            params=self.interface.inputs.model_json_schema(),
            short_name=self.short_name,
            task_type=self.task_type,
            task_type_version=self.task_type_version,
            debuggable=self.debuggable,
            parent_env_name=self.parent_env_name,
            image=self.image,
            interruptible=self.interruptible,
            report=self.report,
        )

    def executor_name(self, in_cluster: bool = False) -> str:
        """Where this task runs unless the manager says otherwise."""
        if self.executor:
            return self.executor
        if self.reusable is not None:
            return "process"
        if self.cpu_bound:
            return "kubernetes" if in_cluster else "process"
        return "inline" if self.is_async else "thread"

    # -- calling --------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run locally (outside a run) or as a durable child run (inside one).

        An async task called from a running event loop hands back the awaitable instead (typed
        code should `await task.aio(...)` there).
        """
        parent = current_run()
        if parent is not None and parent._manager is not None:
            from .workflow import call_child_sync

            if self.is_async and _loop_running():
                return cast(R, self.aio(*args, **kwargs))
            return cast(R, call_child_sync(parent, self, args, kwargs))
        if self.is_async:
            coro = self.forward(*args, **kwargs)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(coro)
            return cast(R, coro)
        return self.forward_sync(*args, **kwargs)

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Await the task from async code, whether its function is sync or async.

        Inside a run it makes a child run, whose call position is taken here, in call order.
        """
        parent = current_run()
        if parent is not None and parent._manager is not None:
            from .workflow import call_child

            # the child's own coroutine, not one wrapping it: a fan-out holds thousands
            return cast(Coroutine[Any, Any, R], call_child(parent, self, args, kwargs))
        return self.forward(*args, **kwargs)

    def run_on_ray(self, *args: Any, **kwargs: Any) -> Any:
        """Run once on Ray and return the typed result (see `executors.ray.run_on_ray`)."""
        from .executors.ray import run_on_ray

        return run_on_ray(self, *args, **kwargs)

    def prepare(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> BaseModel:
        """Bind and validate a call's arguments, enforcing `max_inline_io_bytes`."""
        return self.validate_params(self.interface.bind(args, kwargs))[0]

    def validate_params(self, params: Mapping[str, Any]) -> tuple[BaseModel, dict[str, Any]]:
        """Validated inputs and their stored (JSON) form, within `max_inline_io_bytes`."""
        model = self.interface.validate(params)
        stored = self.interface.stored_params(model)
        check_size(self.name, "input", stored, self.max_inline_io_bytes)
        return model, stored

    def validate_many(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The stored params of many calls, each as `validate_params` makes it; the first
        invalid or oversized one raises as it would there."""
        stored = self.interface.stored_many(items)
        if stored is None:
            return [self.validate_params(params)[1] for params in items]
        for params in stored:
            check_size(self.name, "input", params, self.max_inline_io_bytes)
        return stored

    async def forward(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, with a throwaway run context, and return its typed result."""
        model = self.prepare(args, kwargs)
        run = TaskRun(task=self.name, params=self.interface.stored_params(model))
        call_kwargs = self.interface.call_kwargs(model)
        with bound_secrets(self.secrets, run):
            if self.is_async:
                value = await self.invoke(run, call_kwargs)
            else:
                value = await asyncio.to_thread(self.invoke_sync, run, call_kwargs)
        return self._roundtrip(value)

    def forward_sync(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Synchronous twin of `forward` for sync functions."""
        model = self.prepare(args, kwargs)
        run = TaskRun(task=self.name, params=self.interface.stored_params(model))
        with bound_secrets(self.secrets, run):
            value = self.invoke_sync(run, self.interface.call_kwargs(model))
        return self._roundtrip(value)

    def _roundtrip(self, value: Any) -> R:
        data = self.interface.encode_result(value)
        check_size(self.name, "output", data, self.max_inline_io_bytes)
        return cast(R, value)

    def _args(self, run: TaskRun, kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.report:
            run._report = []  # this attempt's report starts empty
        if self.pre is not None:
            kwargs = dict(self.pre(**kwargs) or kwargs)
        return ((run,) if self.interface.takes_context else ()), kwargs

    async def invoke(self, run: TaskRun, kwargs: dict[str, Any]) -> Any:
        """Call an async (or sync) function in this thread with `run` as the current run."""
        token = set_current_run(run)
        try:
            args, kwargs = self._args(run, kwargs)
            with run._call_scope():
                value = self.fn(*args, **kwargs)
                while inspect.isawaitable(value):  # a task may return a gather() future
                    value = await value
        finally:
            reset_current_run(token)
        return self.post(value) if self.post is not None else value

    def invoke_sync(self, run: TaskRun, kwargs: dict[str, Any]) -> Any:
        """Call a sync function with `run` as the current run (used from worker threads)."""
        token = set_current_run(run)
        try:
            args, kwargs = self._args(run, kwargs)
            with run._call_scope():
                value = self.fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = asyncio.run(_await(value))
        finally:
            reset_current_run(token)
        return self.post(value) if self.post is not None else value


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(value: Awaitable[Any]) -> Any:
    return await value


class TaskInfo(BaseModel):
    """What `Task.info()` returns: the task's definition in JSON-friendly form."""

    name: str
    short_description: str
    description: str
    schedule: str | None
    priority: TaskPriority
    max_concurrency: int
    cpu_bound: bool
    timeout_seconds: float | None
    tags: list[str]
    queue: str
    executor: str
    max_attempts: int | None
    params: dict[str, Any]
    short_name: str = ""
    task_type: str = "python"
    task_type_version: int = 0
    debuggable: bool = False
    parent_env_name: str | None = None
    image: str | None = None
    interruptible: bool = False
    report: bool = False


_ALIASES = {"retries": "retry", "timeout": "timeout_seconds", "env_vars": "env"}
# What `override()` refuses, as Flyte does: these identify the task or its build.
_FIXED = ("name", "fn", "interface", "image", "docs")


def _normalise(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Accept Flyte spellings and loose types; return Task field values."""
    out: dict[str, Any] = {}
    for key, value in opts.items():
        key = _ALIASES.get(key, key)
        if key == "docs":
            out.update(_docs_fields(value))
            continue
        if key == "retry" and isinstance(value, int) and not isinstance(value, bool):
            value = RetryPolicy.from_retries(value)
        elif key == "retry" and value is not None and not isinstance(value, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy or an int, got {value!r}")
        elif key == "timeout_seconds" and isinstance(value, timedelta):
            value = value.total_seconds()
        elif key == "retention" and not isinstance(value, timedelta):
            value = timedelta(seconds=value)  # seconds, as a number
        elif key == "cache":
            value = to_cache(value)
        elif key == "tags":
            value = tuple(value or ())
        elif key == "secrets":
            if isinstance(value, Secret | str):
                value = (value,)
            value = tuple(Secret(s) if isinstance(s, str) else s for s in value or ())
        elif key == "schedule" and value is not None:
            value = as_schedule(value)
        elif key == "triggers":
            value = tuple(value or ())
        elif key == "env":
            value = dict(value or {})
        elif key == "priority":
            value = TaskPriority(value or TaskPriority.medium)
        elif key == "max_concurrency":
            value = int(value or 0)
        elif key == "rate_limit" and value is not None:
            value = parse_rate_limit(value)
        elif key in ("cpu_bound", "interruptible", "report", "debuggable"):
            value = bool(value)
        elif key == "pod_template" and value is not None and not isinstance(value, Mapping):
            raise ConfigError(
                "pod_template must be a PodTemplateSpec dict ({'metadata': ..., 'spec': ...}); "
                f"a PodTemplate named on the cluster is not supported: {value!r}"
            )
        elif key == "executor" and value is not None and value not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}: {value!r}")
        elif key == "queue":
            value = value or "default"
        elif key == "reusable":
            value = to_reuse_policy(value)
        elif key == "serializer" and value is not None:
            get_serializer(value)  # ConfigError naming the choices
        if key not in _FIELDS:
            raise ConfigError(f"unknown task option {key!r}")
        out[key] = value
    return out


def _docs_fields(docs: Any) -> dict[str, str]:
    if docs is None:
        return {}
    if isinstance(docs, str):
        docs = Documentation(docs.strip().splitlines()[0] if docs.strip() else "", docs)
    if not isinstance(docs, Documentation):
        raise ConfigError(f"docs must be a Documentation or a string, got {docs!r}")
    out = {}
    if docs.short_description is not None:
        out["short_description"] = docs.short_description
    if docs.long_description is not None:
        out["description"] = docs.long_description
    return out


_FIELDS = {f.name for f in dataclasses.fields(Task)}


def _check_schedule_params(task: Task) -> None:
    """A schedule must be able to queue its runs: every required input needs a value."""
    params = schedule_params(task.schedule)
    try:
        task.interface.validate(params)
    except InvalidParamsError as exc:
        raise ScheduleError(
            f"task {task.name!r} has schedule {task.schedule} but its runs could not be "
            f"queued ({exc}): give the inputs on the schedule, e.g. "
            "every(timedelta(minutes=5), params={...})"
        ) from None


def make_task(fn: Callable[..., Any], *, task_class: type[Task] = Task, **opts: Any) -> Task:
    """Build a Task (or a `task_class` subclass) from a function and `@task` options."""
    if isinstance(fn, Task):  # re-decorating: image and docs may change, the identity not
        return fn.override(**{k: v for k, v in opts.items() if k not in ("image", "docs")})._with(
            {k: v for k, v in opts.items() if k in ("image", "docs")}
        )
    if not callable(fn):
        raise ConfigError(f"@task needs a function, got {fn!r}")
    values = _normalise({k: v for k, v in opts.items() if v is not None})
    name = values.pop("name", None) or fn.__name__
    short, long = _doc_parts(fn)
    values.setdefault("short_description", short)
    values.setdefault("description", long)
    return task_class(name=name, fn=fn, interface=Interface.from_function(name, fn), **values)


class TaskDecorator(Protocol):
    """What `@task(...)` returns: a decorator that keeps the function's types.

    A leading `TaskRun` parameter is the run context the framework passes, so callers do
    not see it.
    """

    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskRun, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[TaskRun, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class TaskFactory(Protocol):
    """The type of `task` (and `manager.task`, `env.task`): bare, with options, or called."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskRun, P], Coroutine[Any, Any, R]], /, **opts: Any
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[TaskRun, P], R], /, **opts: Any) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /, **opts: Any) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /, **opts: Any) -> Task[P, R]: ...
    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        schedule: Schedule | str | None = None,
        short_description: str | None = None,
        description: str | None = None,
        randomize: RandomizeType | None = None,
        max_concurrency: int | None = None,
        priority: TaskPriority | str | None = None,
        cpu_bound: bool | None = None,
        k8s_config: K8sConfig | None = None,
        timeout_seconds: float | None = None,
        tags: Sequence[str] | None = None,
        retry: RetryPolicy | int | None = None,
        rate_limit_retry: RetryPolicy | None = None,
        rate_limit: RateLimit | str | None = None,
        env: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        cache: CacheSpec = None,
        secrets: Sequence[Secret | str] | Secret | str | None = None,
        queue: str | None = None,
        image: str | None = None,
        pod_template: Mapping[str, Any] | str | None = None,
        interruptible: bool | None = None,
        max_inline_io_bytes: int | None = None,
        triggers: Sequence[Trigger] | None = None,
        report: bool | None = None,
        reusable: Any = None,
        executor: str | None = None,
        short_name: str | None = None,
        docs: Documentation | str | None = None,
        debuggable: bool | None = None,
        serializer: SerializerName | None = None,
        retention: timedelta | float | None = None,
        **flyte_aliases: Any,
    ) -> TaskDecorator: ...


def task_factory(build: Callable[[Callable[..., Any], dict[str, Any]], Task]) -> TaskFactory:
    """A `task`-shaped decorator over `build(fn, opts)`."""

    def factory(fn: Callable[..., Any] | None = None, /, **opts: Any) -> Any:
        if fn is not None:
            return build(fn, opts)
        return lambda f: build(f, opts)

    return cast(TaskFactory, factory)


task: TaskFactory = task_factory(lambda fn, opts: make_task(fn, **opts))
"""Turn a function into a Task; use bare (`@task`), with options (`@task(...)`) or called."""


class TaskEnvironment:
    """Shared defaults for several tasks (Flyte's `TaskEnvironment`): `@env.task`."""

    def __init__(self, name: str = "default", **defaults: Any) -> None:
        self.name = name
        self.defaults = defaults
        self.tasks: list[Task] = []

    @property
    def task(self) -> TaskFactory:
        """Like `@task`, with this environment's defaults under the given options."""
        return task_factory(self._make)

    def _make(self, fn: Callable[..., Any], opts: dict[str, Any]) -> Task:
        # each task records the environment (a weak reference) and its name
        merged = {**self.defaults, **opts, "parent_env": weakref.ref(self),
                  "parent_env_name": self.name}  # fmt: skip
        t = make_task(fn, **merged)
        self.tasks.append(t)
        return t
