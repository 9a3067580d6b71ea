"""One connection kept for script calls, used by one call at a time, beside the pool.

A script call through redis-py's client costs a pool checkout and release and a retry
wrapper around the request (about 70 µs of the ~250 µs a `queue()` costs here). Most calls
a process makes are sequential (a producer's `queue()`, a worker's claim and finish), so the
store sends a call down this lane when it is free and through the pool when another call is
on it. Anything that leaves the connection's state unknown (a lost connection, a timeout, a
cancel mid-call) drops the connection; a lost one sends the call through the pool, whose
retries are the client's.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

try:
    import hiredis
    from redis.asyncio.connection import AbstractConnection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # pragma: no cover - redis.py imports this module only with redis-py present
    pass


DRAIN_ABOVE = 64 * 1024  # bytes waiting in the transport before a call waits for them to go


class ScriptLane:
    """Sends EVALSHA on one dedicated connection of `client`'s pool kind; `free` says
    whether a call may use it now."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conn: AbstractConnection | None = None
        self._pid = os.getpid()
        self._closing: set[asyncio.Task[None]] = set()
        self.free = True

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run `script` (a redis-py AsyncScript) on the lane; the caller checked `free`."""
        self.free = False
        try:
            conn = await self._connection()
            try:
                await self._send(
                    conn, hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
                )
                return await conn.read_response()
            except NoScriptError:  # a flushed or restarted server: the client loads it
                return await script(keys=keys, args=args)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                self._drop(conn)
                return await script(keys=keys, args=args)
            except ResponseError:
                raise  # an error reply is read whole: the connection is still in step
            except BaseException:
                self._drop(conn)  # a cancel mid-call: what is left on the wire is unknown
                raise
        finally:
            self.free = True

    @staticmethod
    async def _send(conn: AbstractConnection, packed: bytes) -> None:
        # redis-py's send wraps every write's drain in wait_for, a new task per call (~30 µs
        # here); the transport takes the bytes at once and only a large call waits to drain
        writer = getattr(conn, "_writer", None)
        if writer is None:
            await conn.send_packed_command(packed, check_health=False)
            return
        writer.write(packed)
        if writer.transport.get_write_buffer_size() > DRAIN_ABOVE:
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()

    async def _connection(self) -> AbstractConnection:
        conn = self._conn
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            conn = self._client.connection_pool.make_connection()
            await conn.connect()
            self._conn = conn
        return conn

    def _drop(self, conn: AbstractConnection) -> None:
        if self._conn is conn:
            self._conn = None
        task = asyncio.ensure_future(conn.disconnect(nowait=True))
        self._closing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the lane's connection (the store's close)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
