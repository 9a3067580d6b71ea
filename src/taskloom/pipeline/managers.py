"""Where a `ProcessTask` job's script runs: this machine, or another host over SSH.

A manager starts a command in a working directory of the target, moves files there and back,
and kills a process group. `LocalProcessManager` runs subprocesses here; `SSHProcessManager`
(the `ssh` extra, asyncssh) runs them on another host, copying files over SFTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, StoreUnavailableError, missing_extra


class ProcessHandle(ABC):
    """A started command: its process id on the target, its end, and how to kill it."""

    pid: int

    @abstractmethod
    async def wait(self) -> int:
        """Wait for the command to end; its exit status (minus the signal if killed)."""

    @abstractmethod
    async def kill(self) -> None:
        """SIGKILL the command's whole process group."""


class ProcessManager(ABC):
    """The target a `ProcessTask` runs its jobs on.

    `basedir` is the directory on the target under which each task keeps one working
    directory per attempt; `host` names the target in `pids` records; `local` is True when
    the target shares this machine's files (inputs from a `FileRepository` are then read in
    place instead of copied).
    """

    basedir: PurePosixPath
    host: str
    local: bool

    async def open(self) -> None:  # noqa: B027 - optional: connect ahead of the first job
        """Prepare the target (connect)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release the target (disconnect)."""

    @abstractmethod
    async def put(self, local: Path, remote: PurePosixPath) -> None:
        """Copy the local directory `local` to `remote` (which must not exist yet)."""

    @abstractmethod
    async def get(self, remote: PurePosixPath, names: Sequence[str], local: Path) -> None:
        """Copy the `names` that exist in the target directory `remote` into `local`."""

    @abstractmethod
    async def remove(self, remote: PurePosixPath) -> None:
        """Delete a file or directory tree on the target (no error if absent)."""

    @abstractmethod
    async def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: PurePosixPath,
        stdin: PurePosixPath,
        stdout: PurePosixPath,
        stderr: PurePosixPath | None,
    ) -> ProcessHandle:
        """Start `command` in `cwd` with `env` added, streams from/to target files
        (`stderr=None` merges it into stdout), in a process group of its own."""


# -- this machine ---------------------------------------------------------------------------------
class _LocalHandle(ProcessHandle):
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    async def wait(self) -> int:
        return await self._proc.wait()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        await self._proc.wait()


class LocalProcessManager(ProcessManager):
    """Runs jobs as subprocesses of this process, each in a new session (process group).

    `basedir` defaults to the system temporary directory; the job sees this process's
    environment plus the task's.
    """

    local = True

    def __init__(self, basedir: str | os.PathLike[str] | None = None) -> None:
        self.basedir = PurePosixPath(basedir or tempfile.gettempdir())
        self.host = "localhost"

    async def put(self, local: Path, remote: PurePosixPath) -> None:
        if Path(remote) != local:
            await asyncio.to_thread(shutil.copytree, local, remote)

    async def get(self, remote: PurePosixPath, names: Sequence[str], local: Path) -> None:
        if Path(remote) == local:
            return
        for name in names:
            source = Path(remote) / name
            if source.is_dir():
                await asyncio.to_thread(shutil.copytree, source, local / name, dirs_exist_ok=True)
            elif source.exists():
                await asyncio.to_thread(shutil.copy2, source, local / name)

    async def remove(self, remote: PurePosixPath) -> None:
        await asyncio.to_thread(shutil.rmtree, remote, True)

    async def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: PurePosixPath,
        stdin: PurePosixPath,
        stdout: PurePosixPath,
        stderr: PurePosixPath | None,
    ) -> ProcessHandle:
        with contextlib.ExitStack() as files:
            fin = files.enter_context(open(stdin, "rb"))  # noqa: ASYNC230 - opening is instant
            fout = files.enter_context(open(stdout, "wb"))  # noqa: ASYNC230
            ferr = files.enter_context(open(stderr, "wb")) if stderr else None  # noqa: ASYNC230
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=fin, stdout=fout,
                stderr=subprocess.STDOUT if ferr is None else ferr,
                cwd=cwd, env={**os.environ, **env}, start_new_session=True,
            )  # fmt: skip
        return _LocalHandle(proc)

    def __repr__(self) -> str:
        return f"LocalProcessManager({str(self.basedir)!r})"


# -- another host over SSH ------------------------------------------------------------------------
def _q(value: object) -> str:
    return shlex.quote(str(value))


class _SSHHandle(ProcessHandle):
    def __init__(self, manager: SSHProcessManager, process: Any, pid: int) -> None:
        self._manager = manager
        self._process = process
        self.pid = pid

    async def wait(self) -> int:
        done = await self._process.wait(check=False)
        if done.exit_signal:  # (signal name, core dumped, message, language)
            name = str(done.exit_signal[0])
            number = getattr(signal, f"SIG{name}", None)
            return -int(number) if number is not None else -1
        return int(done.exit_status if done.exit_status is not None else -1)

    async def kill(self) -> None:
        await self._manager.run(f"kill -KILL -- -{self.pid} 2>/dev/null || kill -KILL {self.pid}")
        self._process.close()


class SSHProcessManager(ProcessManager):
    """Runs jobs on another host over SSH (the `ssh` extra: asyncssh).

    One connection per manager, opened on first use and shared by concurrent jobs (each job
    uses a few channels: keep sshd's `MaxSessions` above twice the jobs in flight). Files go
    over SFTP. The job sees the host's login environment plus the task's; it runs in a
    session of its own, so a timeout or cancel kills all it started. `connect_options` go to
    `asyncssh.connect` as they are (e.g. `passphrase`, `agent_path`).
    """

    local = False

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        username: str | None = None,
        client_keys: Sequence[str | os.PathLike[str]] | None = None,
        known_hosts: str | os.PathLike[str] | tuple[()] | None = (),
        basedir: str = "/tmp/taskloom",
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not host:
            raise ConfigError("SSHProcessManager needs a host")
        self.host = host
        self.port = port
        self.username = username
        self.client_keys = [str(k) for k in client_keys] if client_keys is not None else None
        # () means asyncssh's default (~/.ssh/known_hosts); None disables host checking
        self.known_hosts = known_hosts if known_hosts in ((), None) else str(known_hosts)
        self.basedir = PurePosixPath(basedir)
        self.connect_options = dict(connect_options or {})
        self._conn: Any = None
        self._lock = asyncio.Lock()

    def _asyncssh(self) -> Any:
        try:
            return importlib.import_module("asyncssh")
        except ImportError:
            raise missing_extra("ssh", "asyncssh") from None

    async def open(self) -> None:
        await self._connection()

    async def _connection(self) -> Any:
        async with self._lock:
            if self._conn is None:
                asyncssh = self._asyncssh()
                options: dict[str, Any] = dict(self.connect_options)
                if self.username is not None:
                    options["username"] = self.username
                if self.client_keys is not None:
                    options["client_keys"] = self.client_keys
                if self.known_hosts != ():
                    options["known_hosts"] = self.known_hosts
                try:
                    self._conn = await asyncssh.connect(self.host, port=self.port, **options)
                except (OSError, asyncssh.Error) as exc:
                    raise StoreUnavailableError(
                        f"cannot reach {self.host}:{self.port} over SSH: {exc}"
                    ) from exc
            return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()

    async def run(self, command: str) -> str:
        """Run a shell command on the host; its stdout (raises if it fails)."""
        conn = await self._connection()
        done = await conn.run(command, check=False)
        if done.exit_status not in (0, None):
            raise ConfigError(f"on {self.host}: `{command}` failed: {done.stderr}".strip())
        return str(done.stdout or "")

    async def put(self, local: Path, remote: PurePosixPath) -> None:
        conn = await self._connection()
        await self.run(f"mkdir -p -- {_q(remote.parent)}")
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(local), str(remote), recurse=True, preserve=True)

    async def get(self, remote: PurePosixPath, names: Sequence[str], local: Path) -> None:
        conn = await self._connection()
        async with conn.start_sftp_client() as sftp:
            for name in names:
                path = str(remote / name)
                if await sftp.isdir(path):  # into the local folder of that name, merged
                    (local / name).mkdir(exist_ok=True)
                    for entry in await sftp.listdir(path):
                        if entry not in (".", ".."):
                            await sftp.get(f"{path}/{entry}", str(local / name), recurse=True)
                elif await sftp.exists(path):
                    await sftp.get(path, str(local / name))

    async def remove(self, remote: PurePosixPath) -> None:
        await self.run(f"rm -rf -- {_q(remote)}")

    async def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: PurePosixPath,
        stdin: PurePosixPath,
        stdout: PurePosixPath,
        stderr: PurePosixPath | None,
    ) -> ProcessHandle:
        conn = await self._connection()
        assignments = " ".join(f"{k}={_q(v)}" for k, v in env.items())
        streams = f"<{_q(stdin)} >{_q(stdout)} " + (f"2>{_q(stderr)}" if stderr else "2>&1")
        # sshd starts the login shell as a session leader: its pid ($$), kept by `exec`, is
        # also the process group to kill.
        line = (
            f"echo $$; cd {_q(cwd)} && exec env {assignments} "
            f"{' '.join(_q(c) for c in command)} {streams}"
        )
        process = await conn.create_process(line)
        first = await process.stdout.readline()
        try:
            pid = int(first.strip())
        except ValueError:
            process.close()
            raise ConfigError(f"on {self.host}: could not start the job ({first!r})") from None
        return _SSHHandle(self, process, pid)

    def __repr__(self) -> str:
        return f"SSHProcessManager({self.host!r}, port={self.port})"
