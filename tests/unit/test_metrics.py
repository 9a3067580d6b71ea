"""Prometheus counters and gauges, the worker's metrics endpoint, and OpenTelemetry spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskloom import RateLimitError, RetryPolicy, TaskManager, TaskRun, TaskState, task
from taskloom.metrics import PrometheusHooks, TracingHooks, prometheus_hooks_for, serve_metrics
from taskloom.testing import FakeClock, run_burst

pytest.importorskip("prometheus_client")


@task
async def ok(ctx: TaskRun) -> str:
    """Succeeds."""
    return "fine"


@task(retry=RetryPolicy(max_attempts=2, wait=0.0))
async def fails(ctx: TaskRun) -> None:
    """Fails on both attempts."""
    raise ValueError("nope")


@task
async def limited(ctx: TaskRun) -> None:
    """Hits a rate limit, with no rate_limit_retry: ends rate_limited."""
    raise RateLimitError("slow down")


@task(queue="other", priority="high")
async def elsewhere(ctx: TaskRun) -> None:
    """Lives on another queue."""


# -- Prometheus ------------------------------------------------------------------------------------


async def test_counters_move_for_queued_executed_and_failed_runs() -> None:
    hooks = PrometheusHooks()
    manager = TaskManager("memory://", tasks=[ok, fails, limited], hooks=[hooks])
    async with manager:
        await manager.queue("ok")
        await manager.queue("fails", priority="low")
        await manager.queue("limited")
        done = await run_burst(manager, check=False)
    assert sorted(r.state for r in done) == ["failure", "rate_limited", "success"]

    def value(name: str, **labels: str) -> float | None:
        return hooks.registry.get_sample_value(name, labels)

    assert value("taskloom_runs_queued_total", task="ok", priority="medium") == 1
    assert value("taskloom_runs_queued_total", task="fails", priority="low") == 1
    assert value("taskloom_runs_started_total", task="ok") == 1
    assert value("taskloom_runs_started_total", task="fails") == 2  # one retry
    assert value("taskloom_runs_finished_total", task="ok", state="success") == 1
    assert value("taskloom_runs_finished_total", task="fails", state="failure") == 1
    assert value("taskloom_runs_finished_total", task="limited", state="rate_limited") == 1
    assert value("taskloom_run_retries_total", task="fails") == 1
    assert value("taskloom_run_retries_total", task="ok") is None
    assert value("taskloom_runs_rate_limited_total", task="limited") == 1
    assert value("taskloom_run_duration_seconds_count", task="ok", outcome="success") == 1
    assert value("taskloom_run_duration_seconds_count", task="fails", outcome="failure") == 2
    assert value("taskloom_run_duration_seconds_sum", task="ok", outcome="success") >= 0  # type: ignore[operator]


async def test_gauges_are_read_from_the_store_on_scrape() -> None:
    clock = FakeClock()
    hooks = PrometheusHooks()
    manager = TaskManager("memory://", tasks=[ok, elsewhere], hooks=[hooks], clock=clock)
    async with manager:
        await manager.queue("ok")
        await manager.queue("ok", priority="high")
        await manager.queue("elsewhere")
        await manager.store.worker_beat("w-1", {"active": 3}, 30, clock())
        text = (await hooks.scrape(manager)).decode()
    assert 'taskloom_queue_depth{priority="medium",queue="default"} 1.0' in text
    assert 'taskloom_queue_depth{priority="high",queue="default"} 1.0' in text
    assert 'taskloom_queue_depth{priority="high",queue="other"} 1.0' in text
    assert 'taskloom_queued_runs{priority="high"} 2.0' in text
    assert 'taskloom_runs{state="queued",task="ok"} 2.0' in text
    assert 'taskloom_runs{state="queued",task="elsewhere"} 1.0' in text
    assert "taskloom_workers 1.0" in text
    beat = hooks.registry.get_sample_value(
        "taskloom_worker_heartbeat_timestamp_seconds", {"worker": "w-1"}
    )
    assert beat == clock()
    assert 'taskloom_worker_active_runs{worker="w-1"} 3.0' in text
    assert "taskloom_store_up 1.0" in text


async def test_queue_lag_is_the_oldest_queued_runs_age_per_queue() -> None:
    clock = FakeClock()
    hooks = PrometheusHooks()
    manager = TaskManager("memory://", tasks=[ok, elsewhere], hooks=[hooks], clock=clock)
    async with manager:
        await manager.queue("ok")
        clock.advance(30)
        await manager.queue("ok")
        clock.advance(12)
        await hooks.scrape(manager)

        def lag(queue: str) -> float | None:
            return hooks.registry.get_sample_value("taskloom_queue_lag_seconds", {"queue": queue})

        assert lag("default") == 42.0  # the older of the two
        assert lag("other") == 0.0  # nothing queued there
        await run_burst(manager)
        await hooks.scrape(manager)
        assert lag("default") == 0.0


def test_each_instance_has_its_own_registry() -> None:
    first, second = PrometheusHooks(), PrometheusHooks()  # no duplicate-metric error
    assert first.registry is not second.registry
    manager = TaskManager("memory://", hooks=[first])
    assert prometheus_hooks_for(manager) is first
    bare = TaskManager("memory://")
    added = prometheus_hooks_for(bare)
    assert added in bare.hooks.hooks and prometheus_hooks_for(bare) is added


async def test_serve_metrics_answers_from_the_running_loop() -> None:
    manager = TaskManager("memory://", tasks=[ok])
    async with manager:
        server = serve_metrics(manager, 0, "127.0.0.1")
        await server.wait_started()
        await manager.queue("ok")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                resp = await http.get("/metrics")
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert 'taskloom_runs_queued_total{priority="medium",task="ok"} 1.0' in resp.text
                assert 'taskloom_queue_depth{priority="medium",queue="default"} 1.0' in resp.text
                assert (await http.get("/nope")).status_code == 404
                assert (await http.post("/metrics")).status_code == 405
        finally:
            await server.close()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as http:
                await http.get(f"http://127.0.0.1:{server.port}/metrics")


def test_serve_metrics_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        serve_metrics(TaskManager("memory://"), 0, "127.0.0.1")


# -- OpenTelemetry ---------------------------------------------------------------------------------

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")


@pytest.fixture
def tracing() -> Iterator[tuple[Any, Any]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@task
def leaf(x: int) -> int:
    """A child."""
    return x * 2


def make_root(provider: Any) -> Any:
    """A task that opens a span of its own (on the test's provider), then calls a child."""

    @task(name="root")
    async def root(ctx: TaskRun) -> int:
        with provider.get_tracer("user-code").start_as_current_span("inside root"):
            pass
        return int(await leaf.aio(x=2))

    return root


@task
def sync_root() -> int:
    """A sync parent: its child is called from a worker thread."""
    return int(leaf(x=3))


@task
async def broken(ctx: TaskRun) -> None:
    """Fails."""
    raise KeyError("missing thing")


def by_name(exporter: Any) -> dict[str, Any]:
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert len(names) == len(set(names)), names
    return {s.name: s for s in spans}


async def test_parent_and_child_runs_make_nested_spans(tracing: tuple[Any, Any]) -> None:
    provider, exporter = tracing
    hooks = TracingHooks(provider)
    manager = TaskManager("memory://", tasks=[leaf, make_root(provider)], hooks=[hooks])
    async with manager:
        queued = await manager.queue("root")
        assert "traceparent" in queued.trace  # stamped before the record was written
        stored = await manager.get_run(queued.id)
        assert stored.trace == queued.trace
        await run_burst(manager)
        done = await manager.get_run(queued.id)
    assert done.result == 4

    spans = by_name(exporter)
    queue_span, run_span = spans["queue root"], spans["run root"]
    child_span, user_span = spans["run leaf"], spans["inside root"]
    trace_id = queue_span.context.trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert queue_span.parent is None
    assert run_span.parent.span_id == queue_span.context.span_id  # the queue span leads on
    assert child_span.parent.span_id == run_span.context.span_id
    assert user_span.parent.span_id == run_span.context.span_id
    assert run_span.attributes["taskloom.run_id"] == done.id
    assert run_span.attributes["taskloom.state"] == "success"
    assert child_span.attributes["taskloom.parent_id"] == done.id
    from opentelemetry.trace import SpanKind, StatusCode

    assert run_span.status.status_code is StatusCode.OK
    assert queue_span.kind is SpanKind.PRODUCER and run_span.kind is SpanKind.CONSUMER


async def test_a_sync_parent_still_nests_its_child(tracing: tuple[Any, Any]) -> None:
    provider, exporter = tracing
    manager = TaskManager("memory://", tasks=[leaf, sync_root], hooks=[TracingHooks(provider)])
    async with manager:
        run = await manager.execute("sync_root")  # not queued: no queue span, no trace stamp
    assert run.state is TaskState.success and run.result == 6
    spans = by_name(exporter)
    assert set(spans) == {"run sync_root", "run leaf"}
    assert spans["run leaf"].parent.span_id == spans["run sync_root"].context.span_id


async def test_queueing_inside_a_span_and_a_failure(tracing: tuple[Any, Any]) -> None:
    from opentelemetry.trace import StatusCode

    provider, exporter = tracing
    manager = TaskManager("memory://", tasks=[broken], hooks=[TracingHooks(provider)])
    async with manager:
        with provider.get_tracer("web").start_as_current_span("POST /orders") as request:
            await manager.queue("broken")
        await run_burst(manager, check=False)
    spans = by_name(exporter)
    assert spans["queue broken"].parent.span_id == request.get_span_context().span_id
    failed = spans["run broken"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "KeyError: 'missing thing'"
    assert failed.attributes["taskloom.state"] == "failure"
    assert [e.name for e in failed.events] == ["exception"]


async def test_serve_metrics_binds_loopback_unless_told() -> None:
    async with TaskManager("memory://", tasks=[ok]) as manager:
        local = serve_metrics(manager, 0)
        anywhere = serve_metrics(manager, 0, "0.0.0.0")
        try:
            assert local.host == "127.0.0.1" and anywhere.host == "0.0.0.0"
        finally:
            await local.close()
            await anywhere.close()
