"""Wake-ups across processes that share a store file (SQLite), over unix datagram sockets.

Every process with the file open binds a socket in one folder named after the file; what it
publishes locally is also sent, one datagram per event-loop turn, to every other socket there.
Best effort by design: a lost datagram costs one poll interval, never a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
from pathlib import Path

from .base import Notifier

log = logging.getLogger("taskloom.store.wakeups")

MAX_DATAGRAM = 60_000  # topics beyond this in one turn are dropped: receivers poll for them


def wake_folder(db_path: str) -> Path:
    """The folder of sockets for one database file (short: socket paths are limited)."""
    digest = hashlib.sha1(os.path.realpath(db_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"taskloom-wake-{digest}"


class PeerNotifier(Notifier):
    """A Notifier whose publishes also wake the other processes on the same file."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[str] = set()
        self._peers: list[str] = []
        self._peers_at = -1.0  # mtime of the folder when the peers were listed

    def start(self) -> None:
        """Bind this process's socket and listen (call on the event loop)."""
        if self._sock is not None:
            return
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            path = self.folder / f"{os.getpid()}-{secrets.token_hex(3)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(path))
        except OSError:
            log.warning("cross-process wake-ups off (%s): polling only", self.folder, exc_info=True)
            return
        self._sock, self._path = sock, path
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._receive)

    def stop(self) -> None:
        """Stop listening and remove this process's socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            with contextlib.suppress(OSError):  # the last process out removes the folder
                self.folder.rmdir()

    def publish(self, topic: str) -> None:
        """Wake local watchers now, and other processes at the end of this loop turn."""
        super().publish(topic)
        if self._sock is None or self._loop is None:
            return
        if not self._pending:
            self._loop.call_soon(self._send)
        self._pending.add(topic)

    def _send(self) -> None:
        sock = self._sock
        data = "\n".join(self._pending).encode()[:MAX_DATAGRAM]
        self._pending.clear()
        if sock is None:
            return
        for peer in self._peer_paths():
            try:
                sock.sendto(data, peer)
            except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
                with contextlib.suppress(OSError):
                    os.unlink(peer)
                self._peers_at = -1.0  # list the folder again next time
            except OSError:  # a full receive buffer: that peer will poll
                pass

    def _peer_paths(self) -> list[str]:
        # the folder's mtime moves whenever a process binds or removes its socket: one stat
        # per send finds a new peer at once, without listing the folder every time
        try:
            stamp = float(os.stat(self.folder).st_mtime_ns)
        except OSError:
            return []
        if stamp != self._peers_at:
            mine = str(self._path)
            try:
                self._peers = [str(p) for p in self.folder.iterdir() if str(p) != mine]
            except OSError:
                self._peers = []
            self._peers_at = stamp
        return self._peers

    def _receive(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for topic in data.decode(errors="replace").split("\n"):
                if topic:
                    Notifier.publish(self, topic)  # local only: never echoed back out
