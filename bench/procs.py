"""Worker processes of a sample: start them, wait for the store to show the work done, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from .peers.base import WorkerSpec

#: How often the harness reads the finished count while workers run: small against the
#: seconds a sample takes, and one cheap read (an index count) each time.
DONE_POLL = 0.01
STOP_GRACE = 10.0


class WorkerError(RuntimeError):
    """A worker process died before the work was done (its log tail is in the message)."""


class Workers:
    """`count` processes of one `WorkerSpec`, logging to files under `logdir`, stopped on exit."""

    def __init__(self, spec: WorkerSpec, count: int, logdir: Path) -> None:
        self.spec = spec
        self.count = count
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0.0

    def __enter__(self) -> Workers:
        self.logdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.spec.env}
        root = Path(__file__).resolve().parents[1]
        self.started = time.perf_counter()
        for n in range(self.count):
            log = (self.logdir / f"worker-{n}.log").open("wb")
            self.procs.append(
                subprocess.Popen(self.spec.argv, env=env, cwd=root, stdout=log, stderr=log)
            )
            log.close()  # the child holds its own descriptor
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM every process still running, then SIGKILL whatever outlives the grace."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self, allow_exit: bool) -> None:
        """Raise WorkerError if a process failed (or exited, unless `allow_exit`)."""
        for n, proc in enumerate(self.procs):
            code = proc.poll()
            if code is None or (allow_exit and code == 0):
                continue
            tail = (self.logdir / f"worker-{n}.log").read_text(errors="replace")[-2000:]
            raise WorkerError(f"worker {n} exited with {code}:\n{tail}")

    def all_exited(self) -> bool:
        """True once every process has ended."""
        return all(proc.poll() is not None for proc in self.procs)

    async def wait_done(
        self, finished: Callable[[], Awaitable[int]], target: int, timeout: float,
        *, allow_exit: bool = False,
    ) -> float:  # fmt: skip
        """The `perf_counter` moment `finished()` was seen at `target`, read from the store.

        Raises WorkerError if a worker dies first, TimeoutError after `timeout` seconds.
        """
        deadline = time.perf_counter() + timeout
        while True:
            if await finished() >= target:
                return time.perf_counter()
            self.check_alive(allow_exit)
            if allow_exit and self.all_exited() and await finished() < target:
                raise WorkerError(f"workers exited with {await finished()}/{target} runs done")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {await finished()}/{target} runs done in {timeout}s")
            await asyncio.sleep(DONE_POLL)
