"""Run hooks that count (Prometheus) and trace (OpenTelemetry); the hot loop knows nothing of them.

`PrometheusHooks` counts what the hooks see and, on every scrape, reads a few cheap gauges from
the store (queue depth, live workers). `TracingHooks` stamps the trace context into
`run.trace` when a run is queued and opens one span per attempt. `serve_metrics` exposes a
manager's Prometheus hooks on a small HTTP endpoint inside the running event loop (workers).

Both libraries are optional (`pip install 'taskloom[api]'`): they are imported when a hook is
built, never when this module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import StoreUnavailableError, TaskFailedError, missing_extra
from .hooks import RunHooks
from .run import TaskPriority, TaskRun, TaskState
from .store.base import queued_by_priority

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, TracerProvider
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .manager import TaskManager

log = logging.getLogger("taskloom.metrics")

# Task runs last from milliseconds to hours; the client's default buckets stop at 10 s.
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
)  # fmt: skip
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# -- Prometheus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSnapshot:
    """What the last scrape read from the store; replaced whole, never mutated."""

    up: bool = False
    depth: Mapping[str, Mapping[TaskPriority, int]] = field(default_factory=dict)
    lag: Mapping[str, float] = field(default_factory=dict)  # queue -> oldest queued run's age
    queued: Mapping[TaskPriority, int] = field(default_factory=dict)
    stored: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (task, state) -> runs
    workers: Sequence[tuple[str, float, int | None]] = ()  # (worker, last beat, active runs)


class _SnapshotCollector:
    """Turns the latest `StoreSnapshot` into gauge families when the registry is collected."""

    def __init__(self, owner: PrometheusHooks) -> None:
        self.owner = owner

    def describe(self) -> list[Metric]:
        return list(self._families(StoreSnapshot()))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.owner.snapshot)

    def _families(self, snap: StoreSnapshot) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        ns = self.owner.namespace
        up = GaugeMetricFamily(f"{ns}_store_up", "1 if the last scrape reached the store.")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        depth = GaugeMetricFamily(
            f"{ns}_queue_depth", "Queued runs by queue and priority.", labels=["queue", "priority"]
        )
        for queue, counts in sorted(snap.depth.items()):
            for priority, count in counts.items():
                depth.add_metric([queue, priority.value], float(count))
        yield depth
        lag = GaugeMetricFamily(
            f"{ns}_queue_lag_seconds",
            "Seconds the oldest queued run of each queue has waited since it was queued "
            "(0 when the queue is empty).",
            labels=["queue"],
        )
        for queue, seconds in sorted(snap.lag.items()):
            lag.add_metric([queue], seconds)
        yield lag
        queued = GaugeMetricFamily(
            f"{ns}_queued_runs", "Queued runs over all queues, by priority.", labels=["priority"]
        )
        for priority, count in snap.queued.items():
            queued.add_metric([priority.value], float(count))
        yield queued
        stored = GaugeMetricFamily(
            f"{ns}_runs",
            "Runs the store holds, by task and state (its maintained counters; purged runs "
            "leave them).",
            labels=["task", "state"],
        )
        for (task, state), count in sorted(snap.stored.items()):
            stored.add_metric([task, state], float(count))
        yield stored
        workers = GaugeMetricFamily(f"{ns}_workers", "Workers whose heartbeat has not expired.")
        workers.add_metric([], float(len(snap.workers)))
        yield workers
        beat = GaugeMetricFamily(
            f"{ns}_worker_heartbeat_timestamp_seconds",
            "Unix time of each live worker's last heartbeat.",
            labels=["worker"],
        )
        active = GaugeMetricFamily(
            f"{ns}_worker_active_runs", "Runs each live worker was executing at its last beat.",
            labels=["worker"],
        )  # fmt: skip
        for worker, seen, running in snap.workers:
            beat.add_metric([worker], seen)
            if running is not None:
                active.add_metric([worker], float(running))
        yield beat
        yield active


class PrometheusHooks(RunHooks):
    """Counts runs queued, started, finished, retried and rate-limited, with a duration histogram.

    Each instance owns its `CollectorRegistry` (no global state). Gauges that describe the
    store rather than this process (queue depth, live workers) are read on each scrape by
    `await hooks.scrape(manager)`; `queues` names the queues to report (default: every queue
    a registered task uses, plus "default").
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "taskloom",
        queues: Sequence[str] | None = None,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise missing_extra("api", "prometheus-client") from exc
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.namespace = namespace
        self.queues = list(queues) if queues is not None else None
        self.snapshot = StoreSnapshot()
        reg = self.registry
        self.queued = prom.Counter(
            f"{namespace}_runs_queued", "Runs put on the queue.", ["task", "priority"],
            registry=reg,
        )  # fmt: skip
        self.started = prom.Counter(
            f"{namespace}_runs_started", "Attempts started.", ["task"], registry=reg
        )
        self.finished = prom.Counter(
            f"{namespace}_runs_finished", "Runs that reached a final state.", ["task", "state"],
            registry=reg,
        )  # fmt: skip
        self.retries = prom.Counter(
            f"{namespace}_run_retries", "Failed attempts requeued for a retry.", ["task"],
            registry=reg,
        )  # fmt: skip
        self.rate_limited = prom.Counter(
            f"{namespace}_runs_rate_limited",
            "Attempts that hit a rate limit (requeued or final).", ["task"], registry=reg,
        )  # fmt: skip
        self.cache_hits = prom.Counter(
            f"{namespace}_cache_hits", "Runs answered from the cache.", ["task"], registry=reg
        )
        self.duration = prom.Histogram(
            f"{namespace}_run_duration_seconds",
            "Duration of one attempt, by how it ended.", ["task", "outcome"],
            buckets=tuple(buckets), registry=reg,
        )  # fmt: skip
        reg.register(_SnapshotCollector(self))
        self._started_at: dict[str, float] = {}
        # serve_metrics endpoints live as long as the hooks (so as long as their manager)
        self.servers: list[MetricsServer] = []

    # -- hooks ------------------------------------------------------------------------------------
    async def on_queued(self, run: TaskRun) -> None:
        self.queued.labels(run.task, run.priority.value).inc()

    async def before_run(self, run: TaskRun) -> None:
        self.started.labels(run.task).inc()
        self._started_at[run.id] = time.perf_counter()

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        began = self._started_at.pop(run.id, None)
        outcome = run.attempts[-1].state if run.attempts else run.state
        if began is not None:
            self.duration.labels(run.task, outcome.value).observe(time.perf_counter() - began)
        if run.cache_hit and began is None:
            self.cache_hits.labels(run.task).inc()
        if outcome is TaskState.failure and run.state is TaskState.queued:
            self.retries.labels(run.task).inc()
        if outcome is TaskState.rate_limited:
            self.rate_limited.labels(run.task).inc()
        if run.is_done:
            self.finished.labels(run.task, run.state.value).inc()

    # -- scraping ---------------------------------------------------------------------------------
    def report_queues(self, manager: TaskManager) -> list[str]:
        """The queues whose depth is reported."""
        if self.queues is not None:
            return list(self.queues)
        return sorted({"default", *(t.queue for t in manager.tasks.values())})

    async def refresh(self, manager: TaskManager) -> StoreSnapshot:
        """Read the store gauges now; a store that cannot be reached gives `store_up 0`."""
        try:
            # one call for every queue's depth and age (the store keeps per-queue stats)
            infos = {i.name: i for i in await manager.queues()}
            depth: dict[str, Mapping[TaskPriority, int]] = {}
            lag: dict[str, float] = {}
            for q in self.report_queues(manager):
                info = infos.get(q)
                by_priority = {} if info is None else info.depth
                depth[q] = {p: by_priority.get(p.value, 0) for p in TaskPriority}
                lag[q] = 0.0 if info is None else info.oldest_queued_age or 0.0
            counts = await manager.counts()  # also the totals: one small read
            live = await manager.workers()
        except StoreUnavailableError as exc:
            log.warning("metrics scrape: store unavailable: %s", exc)
            snap = StoreSnapshot(up=False)
        else:
            workers = [(w.worker, w.last_seen, _active(w.info)) for w in live]
            stored: dict[tuple[str, str], int] = {}
            for c in counts:
                key = (c.task, c.state.value)
                stored[key] = stored.get(key, 0) + c.n
            snap = StoreSnapshot(
                up=True, depth=depth, lag=lag, queued=queued_by_priority(counts, None),
                stored=stored, workers=workers,
            )  # fmt: skip
        # One assignment after every await: a concurrent scrape sees one snapshot or the other.
        self.snapshot = snap
        return snap

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (no I/O)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    async def scrape(self, manager: TaskManager) -> bytes:
        """Refresh the store gauges, then render everything (what a `/metrics` handler calls)."""
        await self.refresh(manager)
        return self.exposition()


def _active(info: Mapping[str, Any]) -> int | None:
    value = info.get("active")
    return value if isinstance(value, int) else None


def prometheus_hooks_for(manager: TaskManager) -> PrometheusHooks:
    """The manager's `PrometheusHooks`, added to its hooks if it has none yet."""
    for hook in manager.hooks.hooks:
        if isinstance(hook, PrometheusHooks):
            return hook
    hook = PrometheusHooks()
    manager.hooks.add(hook)
    return hook


# -- the worker's metrics endpoint --------------------------------------------------------------

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 10.0


class MetricsServer:
    """A tiny HTTP/1.1 server answering `GET /metrics` on the manager's event loop.

    It runs in the loop rather than in a thread so that the store is only ever touched from
    the loop that owns it; every read is awaited, so a scrape never blocks the loop.
    """

    def __init__(self, manager: TaskManager, hooks: PrometheusHooks, sock: socket.socket) -> None:
        self.manager = manager
        self.hooks = hooks
        self.host, self.port = sock.getsockname()[:2]
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._ready = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def wait_started(self) -> None:
        """Return once the server accepts connections (they queue in the backlog before)."""
        await self._ready

    async def close(self) -> None:
        """Stop accepting and close the socket."""
        await self._ready
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self in self.hooks.servers:
            self.hooks.servers.remove(self)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, ctype = await asyncio.wait_for(self._answer(reader), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        except Exception:
            # the connection's boundary: answer 500 and keep serving the next scrape
            log.exception("metrics scrape failed")
            status, body, ctype = "500 Internal Server Error", b"scrape failed\n", "text/plain"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        request = await reader.readuntil(b"\r\n\r\n")
        if len(request) > MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", b"", "text/plain"
        method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if path not in ("/metrics", "/"):
            return "404 Not Found", b"not found: try /metrics\n", "text/plain"
        if method != "GET":
            return "405 Method Not Allowed", b"", "text/plain"
        return "200 OK", await self.hooks.scrape(self.manager), CONTENT_TYPE


def serve_metrics(
    manager: TaskManager,
    port: int,
    host: str = "127.0.0.1",
    *,
    hooks: PrometheusHooks | None = None,
) -> MetricsServer:
    """Serve the manager's Prometheus metrics at `http://host:port/metrics` from this loop.

    Call it from async code (the worker does). The port is bound before this returns, so a
    port in use fails here; `port=0` picks a free one (see `server.port`). The manager's
    `PrometheusHooks` is used, added if it has none. The endpoint has no authentication, so
    it binds loopback unless `host` says otherwise: a Prometheus server scraping workers from
    elsewhere needs e.g. "0.0.0.0" (the generated Kubernetes manifests pass it). It is
    read-only and shows no params or results.
    """
    asyncio.get_running_loop()  # fail now, with a clear error, outside a loop
    hooks = hooks if hooks is not None else prometheus_hooks_for(manager)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=64)
    sock.setblocking(False)
    server = MetricsServer(manager, hooks, sock)
    hooks.servers.append(server)
    return server


# -- OpenTelemetry ------------------------------------------------------------------------------


@dataclass
class _LiveSpan:
    span: Span
    token: Token[Context]


class TracingHooks(RunHooks):
    """OpenTelemetry spans: `queue <task>` when a run is queued, `run <task>` per attempt.

    `before_queue` injects the current context (inside a short producer span) into
    `run.trace`, so the record carries it to whichever worker runs it. `before_run` opens the
    run's span under that context; without one (a child run executed inline) it nests under
    the parent run's live span, else under whatever span is current. The span is made current
    while the attempt runs, so spans the task opens, and children it queues, nest under it.
    `after_run` sets the outcome and ends it.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        try:
            from opentelemetry import propagate, trace
        except ImportError as exc:
            raise missing_extra("api", "opentelemetry-api") from exc
        from . import __version__

        self._tracer = trace.get_tracer("taskloom", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator or propagate.get_global_textmap()
        self._live: dict[str, _LiveSpan] = {}

    async def before_queue(self, run: TaskRun) -> None:
        from opentelemetry.trace import SpanKind

        if run.state is not TaskState.queued:
            return  # it starts here: `before_run` nests it under its caller's live span

        with self._tracer.start_as_current_span(
            f"queue {run.task}", kind=SpanKind.PRODUCER, attributes=_attributes(run, "send")
        ):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
        run.trace.update(carrier)

    async def before_run(self, run: TaskRun) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        stale = self._live.pop(run.id, None)
        if stale is not None:  # a lease lost without after_run: do not leak the old span
            stale.span.end()
        span = self._tracer.start_span(
            f"run {run.task}", context=self._parent(run), kind=SpanKind.CONSUMER,
            attributes={**_attributes(run, "process"), "taskloom.attempt": run.retry_attempt},
        )  # fmt: skip
        token = context.attach(trace.set_span_in_context(span))
        self._live[run.id] = _LiveSpan(span, token)

    def _parent(self, run: TaskRun) -> Context | None:
        from opentelemetry import trace

        if run.trace:
            return self._propagator.extract(run.trace)
        parent = self._live.get(run.parent_id) if run.parent_id else None
        if parent is not None:  # sync parents call children from another context
            return trace.set_span_in_context(parent.span)
        return None  # the current context

    async def on_error(self, run: TaskRun, exc: BaseException) -> None:
        live = self._live.get(run.id)
        if live is not None:
            live.span.record_exception(exc)

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        live = self._live.pop(run.id, None)
        if live is None:
            return  # no attempt started here (cache hit, or rate-limited before it began)
        span = live.span
        span.set_attribute("taskloom.state", run.state.value)
        outcome = run.attempts[-1].state if run.attempts else run.state
        span.set_attribute("taskloom.outcome", outcome.value)
        if outcome is TaskState.success:
            span.set_status(Status(StatusCode.OK))
        elif outcome is not TaskState.interrupted:
            failure = error or run.failure
            message = f"{failure.type_name}: {failure.message}" if failure else outcome.value
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()
        context.detach(live.token)


def _attributes(run: TaskRun, operation: str) -> dict[str, str]:
    attrs = {
        "messaging.system": "taskloom",
        "messaging.operation.type": operation,
        "messaging.destination.name": run.queue,
        "messaging.message.id": run.id,
        "taskloom.task": run.task,
        "taskloom.run_id": run.id,
        "taskloom.priority": run.priority.value,
    }
    if run.parent_id:
        attrs["taskloom.parent_id"] = run.parent_id
    return attrs
