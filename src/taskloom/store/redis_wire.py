"""One multiplexed Redis connection for the store's scripts: the hot path's only round trip.

redis-py's pooled client costs more client CPU per call than the script costs the server
(a pool checkout, a condition variable, timeouts and response callbacks per command). Here
every script call is one EVALSHA written to a single socket; replies are parsed by hiredis in
`data_received` and resolve their callers' futures in order (Redis answers in order). Calls
from many coroutines pipeline on the wire without waiting for each other.

Failure handling matches the pooled client it replaces: a lost connection fails the calls in
flight with `ConnectionError` and the next call reconnects; a call is retried (up to
`RETRIES` times, with a short backoff) when the connection fails, which is safe because every
script is idempotent or fenced (enqueue checks the id, finish and heartbeat check the lease
token, a repeated claim only leaves leases that reclaim expires). A server that stops
answering fails the calls in flight after `REPLY_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REPLY_TIMEOUT = 5.0  # seconds a call may wait for its reply (redis-py's socket_timeout here)
CONNECT_TIMEOUT = 2.0
RETRIES = 3
RETRY_BACKOFF = 0.05  # seconds before the first retry; doubles each time


@dataclass(frozen=True)
class Address:
    """Where and how to connect: TCP host/port or a unix socket path, plus the handshake."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None

    @classmethod
    def from_pool_kwargs(cls, kw: dict[str, Any]) -> Address:
        """From a redis-py pool's `connection_kwargs` (the URL as redis-py parsed it)."""
        return cls(
            host=kw.get("host", "127.0.0.1"), port=int(kw.get("port", 6379)),
            path=kw.get("path"), db=int(kw.get("db") or 0), username=kw.get("username"),
            password=kw.get("password"), client_name=kw.get("client_name"),
        )  # fmt: skip


def _pack(parts: tuple[Any, ...]) -> bytes:
    """One command in RESP (hiredis's stubs type the tuple as a single item)."""
    packed: bytes = hiredis.pack_command(cast(Any, parts))
    return packed


class _Protocol(asyncio.Protocol):
    """Feeds bytes to hiredis and hands each reply to the oldest waiting future."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("unexpected reply from redis"))
                return
            fut, _sent = waiters.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("connection closed by server")
        self._fail(self.lost)

    def _fail(self, exc: BaseException) -> None:
        self.lost = self.lost or exc
        while self.waiters:
            fut, _sent = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(RedisConnectionError(str(exc)))
        if self.transport is not None:
            self.transport.abort()

    @property
    def alive(self) -> bool:
        return self.lost is None and self.transport is not None

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one command; its reply resolves the returned future."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.waiters.append((fut, loop.time()))
        self.transport.write(packed)
        return fut

    def check_timeout(self, now: float, timeout: float) -> bool:
        """Fail everything if the oldest call has waited too long; True if it did."""
        if self.waiters and now - self.waiters[0][1] > timeout:
            self._fail(RedisTimeoutError(f"no reply from redis in {timeout}s"))
            return True
        return False


class ScriptConnection:
    """EVALSHA over one lazily (re)connected socket; `call` is the whole public surface."""

    def __init__(self, address: Address, scripts: dict[str, str]) -> None:
        self.address = address
        self._bodies = {name: body.encode() for name, body in scripts.items()}
        self._shas = {
            name: hashlib.sha1(body, usedforsecurity=False).hexdigest().encode()
            for name, body in self._bodies.items()
        }
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, script: str, args: Sequence[str | bytes | int | float]) -> Any:
        """Run `script` with `args` as ARGV; a Lua error raises ResponseError."""
        packed = _pack((b"EVALSHA", self._shas[script], 0, *args))
        delay = RETRY_BACKOFF
        for attempt in range(RETRIES + 1):
            try:
                proto = self._proto
                if proto is None or not proto.alive:
                    proto = await self._connect()
                reply = await proto.send(packed)
                if isinstance(reply, hiredis.ReplyError):
                    if str(reply).startswith("NOSCRIPT"):  # a restarted or flushed server
                        body = self._bodies[script]
                        reply = await proto.send(_pack((b"EVAL", body, 0, *args)))
                    if isinstance(reply, hiredis.ReplyError):
                        message = str(reply)
                        if message.startswith("LOADING"):  # a restarting server: retry
                            raise BusyLoadingError(message)
                        raise ResponseError(message)
                return reply
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if attempt == RETRIES:
                    if isinstance(exc, RedisTimeoutError | RedisConnectionError):
                        raise
                    raise RedisConnectionError(str(exc)) from exc
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        a = self.address
        try:
            if a.path:
                opening = loop.create_unix_connection(_Protocol, a.path)
            else:
                opening = loop.create_connection(_Protocol, a.host, a.port)
            _transport, proto = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to redis: {exc}") from exc
        handshake: list[tuple[Any, ...]] = []
        if a.password is not None:
            auth = (a.username, a.password) if a.username else (a.password,)
            handshake.append((b"AUTH", *auth))
        if a.client_name:
            handshake.append((b"CLIENT", b"SETNAME", a.client_name))
        if a.db:
            handshake.append((b"SELECT", a.db))
        replies = await asyncio.gather(*(proto.send(_pack(c)) for c in handshake))
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                proto._fail(RedisConnectionError(str(reply)))
                raise RedisConnectionError(f"redis handshake failed: {reply}")
        self._proto = proto
        self._arm_watchdog()
        return proto

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(REPLY_TIMEOUT / 5, self._tick)

    def _tick(self) -> None:
        self._watchdog = None
        proto = self._proto
        if proto is not None and proto.alive:
            proto.check_timeout(asyncio.get_running_loop().time(), REPLY_TIMEOUT)
        if proto is not None and proto.alive:
            self._arm_watchdog()

    def close(self) -> None:
        """Drop the socket (calls in flight fail; a later call connects again)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
