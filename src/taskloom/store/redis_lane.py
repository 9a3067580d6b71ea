"""One pipelined connection for script calls, beside redis-py's pool.

A script call through redis-py's asyncio client costs a pool checkout and release, a retry
wrapper, a `wait_for` task per write and a parser on Python streams: on this project's 2-core
machine about 230 µs per call against about 90 µs for the same command on an asyncio protocol
that feeds hiredis's reader directly. Most of a process's store calls are scripts (a
producer's `queue()`, a worker's claim, heartbeat and finish), so they go down this lane:
calls are written as they come and their replies are matched in order, so concurrent callers
share the connection without waiting for each other's round trip.

The lane speaks only what it needs (AUTH, SELECT, EVALSHA over RESP2, TCP or a Unix socket).
Anything else the URL asks for (TLS, a credential provider) leaves the store on the pool.
When the connection is lost or stalls, or a script is missing from the server's cache, the
call is made again through the pool, whose retries and script loading are the client's; the
lane reconnects on its next call. A caller cancelled mid-call does not disturb the others:
its reply is read and dropped in turn.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from typing import Any, cast

try:
    import hiredis
    from redis.asyncio.connection import SSLConnection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
except ImportError:  # pragma: no cover - redis.py imports this module only with redis-py present
    pass


DRAIN_ABOVE = 64 * 1024  # bytes waiting in the transport before a call waits for them to go
# error replies about the server's state rather than the call (loading a dump, a replica, a
# long script running): redis-py raises its own classes for them, and retries some
_SERVER_STATE_ERRORS = ("LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")
_PUSH_KINDS = frozenset((b"message", b"subscribe", b"unsubscribe"))


class LaneLostError(Exception):
    """The lane's connection went away (or stalled) with the call unanswered."""


class _Resp(asyncio.Protocol):
    """RESP2 replies in order, each to the future of the command that asked for it."""

    def __init__(
        self, stall_seconds: float, on_push: Callable[[list[Any]], None] | None = None
    ) -> None:
        self._reader = hiredis.Reader()
        self._on_push = on_push  # a subscribed connection: messages go here as they are read
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._stall = stall_seconds
        self._replies = 0  # replies read so far: the stall watch looks for progress
        self._watch: asyncio.TimerHandle | None = None
        self._writable: asyncio.Event | None = None  # set while the transport takes writes
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (uvicorn's default loop) do not subclass asyncio.Transport
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            if self._on_push is not None and type(reply) is list and reply[0] in _PUSH_KINDS:
                self._on_push(reply)
                continue
            self._replies += 1
            future = waiting.popleft()
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        if self._watch is not None:
            self._watch.cancel()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(LaneLostError(str(exc or "connection closed")))
        if self._writable is not None:
            self._writable.set()

    def pause_writing(self) -> None:
        self._writable = self._writable or asyncio.Event()
        self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

    def push(self, *args: Any) -> None:
        """Write a command whose replies come as push messages (SUBSCRIBE, UNSUBSCRIBE)."""
        if self._transport is not None and not self.lost:
            self._transport.write(hiredis.pack_command(args))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one packed command; its reply resolves the returned future."""
        assert self._transport is not None
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._transport.write(packed)
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(
                self._stall, self._check, self._replies
            )
        return future

    async def drained(self) -> None:
        """Wait while the transport holds more than it should (a very large call)."""
        assert self._transport is not None
        if self._transport.get_write_buffer_size() > DRAIN_ABOVE and self._writable is not None:
            await self._writable.wait()

    def _check(self, replies_then: int) -> None:
        # no reply for a whole stall period while calls wait: the server or the link hangs
        self._watch = None
        if not self._waiting:
            return
        if self._replies == replies_then:
            self.close()
            return
        self._watch = asyncio.get_running_loop().call_later(self._stall, self._check, self._replies)

    def close(self) -> None:
        """Abort the connection: every waiting call fails with LaneLostError."""
        if self._transport is not None:
            self._transport.abort()


def lane_usable(client: Any) -> bool:
    """Whether the lanes can reach `client`'s server (not over TLS or a credential provider)."""
    pool = client.connection_pool
    return not issubclass(pool.connection_class, SSLConnection) and not (
        pool.connection_kwargs.get("credential_provider")
    )


async def open_lane(
    kw: dict[str, Any], on_push: Callable[[list[Any]], None] | None = None
) -> _Resp:
    """A connection to the server redis-py's connection kwargs `kw` name, authenticated and on
    its database; with `on_push`, for subscribing."""
    loop = asyncio.get_running_loop()
    stall = float(kw.get("socket_timeout") or 5.0)

    def protocol() -> _Resp:
        return _Resp(stall, on_push)

    async with asyncio.timeout(float(kw.get("socket_connect_timeout") or 5.0)):
        if "path" in kw:
            _, proto = await loop.create_unix_connection(protocol, kw["path"])
        else:
            _, proto = await loop.create_connection(
                protocol, kw.get("host", "localhost"), int(kw.get("port", 6379))
            )
        setup: list[tuple[Any, ...]] = []
        if kw.get("password"):
            user = kw.get("username")
            setup.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if kw.get("client_name"):  # operators find the store's connections by it
            setup.append(("CLIENT", "SETNAME", kw["client_name"]))
        if int(kw.get("db") or 0) and on_push is None:  # channels span databases
            setup.append(("SELECT", int(kw["db"])))
        replies = [proto.send(hiredis.pack_command(cmd)) for cmd in setup]
        for reply in await asyncio.gather(*replies):
            if isinstance(reply, hiredis.ReplyError):
                proto.close()
                raise RedisConnectionError(f"redis lane setup failed: {reply}")
    return proto


class ScriptLane:
    """Sends EVALSHA for the store on one pipelined connection to `client`'s server."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._kw: dict[str, Any] = dict(client.connection_pool.connection_kwargs)
        self._proto: _Resp | None = None
        self._connecting: asyncio.Future[_Resp] | None = None
        self._pid = os.getpid()

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run `script` (a redis-py AsyncScript): on the lane, else through the client."""
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            reply = await self.command(*call)
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                # first use, or a flushed or restarted server: load it here and call again
                await self.command("SCRIPT", "LOAD", script.script)
                reply = await self.command(*call)
        except (LaneLostError, RedisConnectionError, OSError, TimeoutError):
            return await script(keys=keys, args=args)
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith(_SERVER_STATE_ERRORS):  # the client's classes and retries
                return await script(keys=keys, args=args)
            raise ResponseError(str(reply))
        return reply

    async def command(self, *args: Any) -> Any:
        """One command's raw reply (an error reply comes back as `hiredis.ReplyError`)."""
        proto = self._proto
        if proto is None or proto.lost or self._pid != os.getpid():
            proto = await self._connection()
        future = proto.send(hiredis.pack_command(args))
        await proto.drained()
        return await future

    async def _connection(self) -> _Resp:
        if self._pid != os.getpid():  # a forked child must not share its parent's socket
            self._pid, self._proto, self._connecting = os.getpid(), None, None
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        # shielded: one caller's cancel must not abort the connect others wait on
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Resp:
        proto = await open_lane(self._kw)
        self._proto = proto
        return proto

    async def close(self) -> None:
        """Close the lane's connection (the store's close)."""
        proto, self._proto = self._proto, None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if proto is not None:
            proto.close()
