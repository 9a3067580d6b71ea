"""The Redis store survives cut connections and a server restart; a down server fails fast.

Runs are enqueued, claimed and finished by a few concurrent workers while connections are cut
(or the server is killed and restarted); afterwards every run is finished exactly once: one
finish wrote its record and no other finish was acknowledged.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from taskloom.errors import StoreUnavailableError
from taskloom.run import TaskRun, TaskState
from taskloom.store import RunQuery
from taskloom.store.base import dt
from tests.conftest import IN_CI, redis_url, unavailable

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # the redis extra is missing: a failure in CI, like a missing server
    if IN_CI:
        raise
    pytest.skip(f"redis extra missing: {exc}", allow_module_level=True)

from taskloom.store.redis import RedisStore

T0 = 1_800_000_000.0
LEASE = 10.0  # fake seconds; the fake clock runs 20x, so a lease lasts 0.5 s of real time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_params(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass
class Ledger:
    """What the workers saw: tokens whose finish was acknowledged, per run."""

    acked: dict[str, list[str]] = field(default_factory=dict)
    outages: int = 0
    quarter: asyncio.Event = field(default_factory=asyncio.Event)  # a quarter of the runs acked


async def retrying(call: Callable[[], Awaitable[object]], ledger: Ledger) -> object:
    """Call until the store answers (a real consumer backs off the same way)."""
    while True:
        try:
            return await call()
        except StoreUnavailableError:
            ledger.outages += 1
            await asyncio.sleep(0.05)


async def churn(
    store: RedisStore, n: int, disrupt: Callable[[Ledger], Awaitable[None]], timeout: float = 60.0
) -> Ledger:
    """Enqueue `n` runs and work them off with 4 workers while `disrupt(ledger)` runs."""
    started = time.monotonic()

    def clock() -> float:
        return T0 + (time.monotonic() - started) * 20

    ledger = Ledger()
    runs = [
        TaskRun(task="t", state=TaskState.queued, queued=dt(T0), params={"i": i}) for i in range(n)
    ]
    done = asyncio.Event()

    async def produce() -> None:
        for i in range(0, n, 25):
            batch = runs[i : i + 25]
            await retrying(partial(store.enqueue, batch), ledger)
            await asyncio.sleep(0.005)

    async def work(name: str) -> None:
        while not done.is_set():
            try:
                await store.reclaim(clock())
                leases = await store.claim(name, None, 10, LEASE, clock())
            except StoreUnavailableError:
                ledger.outages += 1
                await asyncio.sleep(0.05)
                continue
            if not leases:
                await asyncio.sleep(0.01)
                continue
            items = [
                (lease, lease.run.model_copy(
                    update={"state": TaskState.success, "end": dt(clock()),
                            "result": {"token": lease.token}}
                ))
                for lease in leases
            ]  # fmt: skip
            # an unanswered finish is retried with the same lease: fencing makes that safe
            ok = await retrying(partial(store.finish, items), ledger)
            assert isinstance(ok, list)
            for written, (lease, _new) in zip(ok, items, strict=True):
                if written:
                    ledger.acked.setdefault(lease.run.id, []).append(lease.token)
            if len(ledger.acked) >= n // 4:
                ledger.quarter.set()

    async def watch() -> None:
        while True:
            try:
                finished = await store.query(RunQuery(state=TaskState.success, limit=n))
                if len(finished) == n:
                    done.set()
                    return
            except StoreUnavailableError:
                pass
            await asyncio.sleep(0.1)

    async def all_of_it() -> None:
        await asyncio.gather(
            produce(), disrupt(ledger), watch(), *(work(f"w{i}") for i in range(4))
        )

    await asyncio.wait_for(all_of_it(), timeout)
    await check_exactly_once(store, runs, ledger)
    return ledger


async def check_exactly_once(store: RedisStore, runs: list[TaskRun], ledger: Ledger) -> None:
    for run in runs:
        got = await store.get(run.id)
        assert got is not None and got.state is TaskState.success, run.id
        acked = ledger.acked.get(run.id, [])
        # never two acknowledged finishes; the record is the one that was acknowledged (a
        # run without an ack had its finish written while the reply was lost)
        assert len(acked) <= 1, (run.id, acked)
        if acked:
            assert got.result == {"token": acked[0]}
    assert set((await store.queue_length(None)).values()) == {0}


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    url = redis_url()
    if not url:
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
        raise AssertionError
    tag = uuid.uuid4().hex[:12]
    store = RedisStore(with_params(url, prefix=f"r{tag}:", client_name=f"taskloom-restart-{tag}"))
    await store.connect()
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


async def test_store_recovers_when_connections_are_cut(redis_store: RedisStore) -> None:
    url = redis_url()
    assert url is not None
    [name] = parse_qs(urlsplit(redis_store.url).query)["client_name"]
    raw = aioredis.Redis.from_url(url)
    killed = 0

    async def cut(ledger: Ledger) -> None:
        nonlocal killed
        # Only this store's connections (the server is shared with other tests): the same as
        # CLIENT KILL TYPE normal would do to it, plus its pub/sub listener.
        for _ in range(10):
            await asyncio.sleep(0.1)
            clients = await raw.client_list()
            ids = [c["id"] for c in clients if c.get("name") == name]
            for client_id in ids:
                killed += await raw.client_kill_filter(_id=client_id)

    try:
        await churn(redis_store, 1000, cut)
        assert killed >= 10
        # the listener came back: a message from another client wakes local watchers
        with redis_store.notifier.watch("run:probe") as woke:
            deadline = time.monotonic() + 10
            while not woke.is_set() and time.monotonic() < deadline:
                await raw.publish(f"{redis_store.prefix}events", "run:probe")
                await asyncio.sleep(0.1)
            assert woke.is_set()
    finally:
        await raw.aclose()


async def test_enqueue_fails_fast_when_the_server_is_unreachable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0?prefix=gone:")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await store.connect()
    with pytest.raises(StoreUnavailableError):
        await store.enqueue([TaskRun(task="t", state=TaskState.queued)])
    assert time.monotonic() - started < 5
    await store.close()


class RedisServer:
    """A private redis-server on a free port, persisting every write (AOF, fsync always)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.ping()
                    return
                except RedisConnectionError:  # refused, or still loading the AOF
                    if time.monotonic() > deadline or self.proc.returncode is not None:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def crash(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 10)


async def test_store_survives_a_server_crash_and_restart(tmp_path: Path) -> None:
    # A private server (never the shared one) is SIGKILLed mid-flight and started again on
    # the same port and AOF; it runs wherever the Redis tests are enabled.
    if not redis_url():
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not on PATH: cannot crash a private server")
    server = RedisServer(binary, tmp_path)
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0?prefix=crash:")

    async def crash_and_restart(ledger: Ledger) -> None:
        await ledger.quarter.wait()  # crash mid-flight
        await server.crash()
        # down: a write fails fast instead of hanging
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.enqueue([TaskRun(task="t", state=TaskState.queued, queued=dt(T0))])
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.5)
        await server.start()

    try:
        await server.start()
        await store.connect()
        ledger = await churn(store, 600, crash_and_restart)
        assert ledger.outages > 0
        with store.notifier.watch("run:probe") as woke:
            raw = aioredis.Redis(port=server.port)
            try:
                deadline = time.monotonic() + 15
                while not woke.is_set() and time.monotonic() < deadline:
                    await raw.publish("crash:events", "run:probe")
                    await asyncio.sleep(0.1)
            finally:
                await raw.aclose()
            assert woke.is_set(), "the event listener did not come back after the restart"
    finally:
        await store.close()
        await server.crash()
