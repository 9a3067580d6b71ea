"""ProcessTask: a job is a script rendered from a template and run as a process, here or on
another host (its `manager`, see `managers.py`).

The script runs in a working directory of its own under the task's `basedir`, in a new
process group (so a timeout or a cancel kills everything it started). Inputs are given as
paths: a file repository's own file (on this machine), or a copy of the blob for other
repositories. Outputs are written by the script to paths in the working directory and
copied into their repositories atomically only after it exits 0, together with the captured
stdout and stderr; a failed job leaves no output behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final

from ..errors import NonRetryableError, TaskloomError
from ..policies import Resources, RetryPolicy
from ..run import TaskRun
from .kinds import PipelineTask
from .managers import LocalProcessManager, ProcessManager
from .repositories import FileRepository, KeySet, Repository

log = logging.getLogger("taskloom.pipeline.process")

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_BUILTIN_VARS = ("job", "task", "run_id", "attempt", "workdir")
_SPECIAL_LINKS = ("done", "live", "pids", "stdin", "stdout", "stderr")
_STDERR_TAIL = 2000


class _Stdout:
    """The `STDOUT` marker type."""

    def __repr__(self) -> str:
        return "STDOUT"


STDOUT: Final = _Stdout()
"""Pass as `stderr=` to interleave the script's stderr into its stdout."""


class ProcessExitError(TaskloomError):
    """A job's script exited with a non-zero status (the message ends with its stderr)."""

    def __init__(self, returncode: int, stderr: str = "") -> None:
        tail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"script exited with status {returncode}{tail}")
        self.returncode = returncode


def template_vars(template: str) -> set[str]:
    """The `{{ name }}` variables a template uses."""
    return set(_VAR.findall(template))


def render(template: str, values: Mapping[str, str]) -> str:
    """Replace each `{{ name }}` with its value; an unknown name fails the job for good."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise NonRetryableError(f"template uses {{{{ {name} }}}}, which is not defined")
        return values[name]

    return _VAR.sub(sub, template)


def _env_name(link: str) -> str:
    return "TASKLOOM_LINK_" + re.sub(r"[^A-Za-z0-9]", "_", link).upper()


class ProcessTask(PipelineTask):
    """A job runs `template` (a string, or a `Path` read when the pipeline opens) rendered
    with `{{ job }}`, `{{ task }}`, `{{ run_id }}`, `{{ attempt }}`, `{{ workdir }}` and one
    `{{ <link> }}` path per link. The same paths are in the environment as
    `TASKLOOM_LINK_<LINK>`, next to `TASKLOOM_JOB`, `TASKLOOM_TASK` and `TASKLOOM_RUN_ID`;
    values are inserted unquoted, so prefer the environment in shell scripts.

    A script starting with `#!` is executed directly, anything else by `/bin/sh`.
    `stdin` (is_input) feeds the job's blob to the script; `stdout` and `stderr` (is_output)
    receive what it printed; `stderr=STDOUT` merges the two streams.

    `manager` is where jobs run: a `ProcessManager` or a callable returning one (default: a
    `LocalProcessManager` under `scratch_dir`); an `SSHProcessManager` runs them on another
    host, copying inputs there and outputs back. `pids` (linked as status, inhibits_start,
    inhibits_output) holds each running job's pid, host and working directory.
    """

    kind = "process"

    def __init__(
        self,
        name: str,
        template: str | Path,
        done: Repository,
        *,
        stdin: Repository | None = None,
        stdout: Repository | None = None,
        stderr: Repository | _Stdout | None = None,
        environ: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        ready: KeySet | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        scratch_dir: str | os.PathLike[str] | None = None,
        manager: ProcessManager | Callable[[], ProcessManager] | None = None,
        pids: Repository | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            name, done=done, ready=ready, resources=resources, retry=retry, timeout=timeout,
            disabled=disabled,
        )  # fmt: skip
        self._manager_source = manager
        self._manager = manager if isinstance(manager, ProcessManager) else None
        self.template_source = template
        self.template = template if isinstance(template, str) else ""
        self.environ = dict(environ or {})
        self.scratch_dir = scratch_dir
        self.merge_stderr = stderr is STDOUT
        if stdin is not None:
            self.link("stdin", stdin, is_input=True)
        if stdout is not None:
            self.link("stdout", stdout, is_output=True)
        if stderr is not None and not isinstance(stderr, _Stdout):
            self.link("stderr", stderr, is_output=True)
        if pids is not None:
            self.link("pids", pids, is_status=True, inhibits_start=True, inhibits_output=True)

    @property
    def manager(self) -> ProcessManager:
        """Where this task's jobs run."""
        if self._manager is None:
            source = self._manager_source
            self._manager = source() if callable(source) else LocalProcessManager(self.scratch_dir)
        return self._manager

    @property
    def basedir(self) -> PurePosixPath:
        """The directory on the target that holds this task's working directories."""
        return self.manager.basedir / self.name

    def _load_template(self) -> str:
        if isinstance(self.template_source, Path):
            return self.template_source.read_text()
        return self.template_source

    def problems(self) -> list[str]:
        out = super().problems()
        try:
            template = self._load_template()
        except OSError as exc:
            return [*out, f"cannot read template {self.template_source}: {exc}"]
        known = set(_BUILTIN_VARS) | set(self.links)
        for name in sorted(template_vars(template) - known):
            out.append(f"template uses {{{{ {name} }}}}, which is neither a link nor one of "
                       f"{', '.join(_BUILTIN_VARS)}")  # fmt: skip
        return out

    async def setup(self) -> None:
        """Read the template file, if the template is a path."""
        self.template = self._load_template()

    async def teardown(self) -> None:
        """Close the manager (an SSH connection)."""
        if self._manager is not None:
            await self._manager.close()

    async def execute(self, job: str, run: TaskRun) -> Any:
        """Stage inputs, run the script, store outputs on success; returns its exit status."""
        if not self.template:
            self.template = self._load_template()
        manager = self.manager
        if manager.local:  # the working directory is the staging directory itself
            base = Path(self.basedir)
            await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f"{run.id}-{run.retry_attempt}-", dir=base))
            workdir = PurePosixPath(scratch)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"taskloom-{self.name}-"))
            workdir = self.basedir / f"{run.id}-{run.retry_attempt}"
        try:
            return await self._run_in(scratch, workdir, job, run)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if not manager.local:
                try:
                    await asyncio.shield(manager.remove(workdir))
                except Exception as exc:  # never hide the job's own outcome
                    log.warning("could not remove %s on %s: %s", workdir, manager.host, exc)

    async def _stage(
        self, scratch: Path, workdir: PurePosixPath, job: str, local: bool
    ) -> tuple[dict[str, str], dict[str, Path]]:
        """Target paths for every data link (`scratch` here becomes `workdir` there); outputs
        are collected from `outputs` after the run."""
        paths: dict[str, str] = {}
        outputs: dict[str, Path] = {}
        (scratch / "in").mkdir()
        (scratch / "out").mkdir()
        for name, link in self.links.items():
            if name in _SPECIAL_LINKS or link.is_status:
                continue
            if link.is_output:
                outputs[name] = scratch / "out" / name
                paths[name] = str(workdir / "out" / name)
                if link.is_input:  # updated in place: start from the current value
                    with contextlib.suppress(KeyError):
                        outputs[name].write_bytes(await link.repo.read(job))
            elif local and isinstance(link.repo, FileRepository):
                paths[name] = str(link.repo.path_of(job))
            else:
                target = scratch / "in" / name
                with contextlib.suppress(KeyError):  # an optional input may be absent
                    target.write_bytes(await link.repo.read(job))
                paths[name] = str(workdir / "in" / name)
        return paths, outputs

    async def _run_in(
        self, scratch: Path, workdir: PurePosixPath, job: str, run: TaskRun
    ) -> dict[str, Any]:
        manager = self.manager
        paths, outputs = await self._stage(scratch, workdir, job, manager.local)
        values = {
            "job": job, "task": self.name, "run_id": run.id,
            "attempt": str(run.retry_attempt), "workdir": str(workdir), **paths,
        }  # fmt: skip
        script = scratch / "script"
        script.write_text(render(self.template, values))
        script.chmod(0o700)
        there = str(workdir / "script")
        command = [there] if self.template.startswith("#!") else ["/bin/sh", there]
        env = {
            **self.environ, "TASKLOOM_JOB": job, "TASKLOOM_TASK": self.name,
            "TASKLOOM_RUN_ID": run.id, **{_env_name(k): v for k, v in paths.items()},
        }  # fmt: skip
        stdin_path = scratch / "stdin"
        if "stdin" in self.links:
            with contextlib.suppress(KeyError):
                stdin_path.write_bytes(await self.links["stdin"].repo.read(job))
        stdin_path.touch()
        out_path, err_path = scratch / "stdout", scratch / "stderr"
        await manager.put(scratch, workdir)
        code = await self._spawn(job, run, command, env, workdir)
        await manager.get(workdir, ["out", "stdout", "stderr"], scratch)
        if not out_path.exists():
            out_path.touch()
        if not err_path.exists():
            err_path.touch()
        if code != 0:
            err = (out_path if self.merge_stderr else err_path).read_bytes()
            raise ProcessExitError(code, err[-_STDERR_TAIL:].decode(errors="replace"))
        for name, path in outputs.items():
            if path.exists():
                await self.links[name].repo.write(job, path.read_bytes())
        if "stdout" in self.links:
            await self.links["stdout"].repo.write(job, out_path.read_bytes())
        if "stderr" in self.links:
            await self.links["stderr"].repo.write(job, err_path.read_bytes())
        return {"returncode": code}

    async def _spawn(
        self,
        job: str,
        run: TaskRun,
        command: list[str],
        env: dict[str, str],
        workdir: PurePosixPath,
    ) -> int:
        """Run the script to its end; a cancel (timeout, abort, drain) kills its process group.
        While it runs, `pids` holds its pid, host and working directory.

        Failing to start (a missing interpreter, an unexecutable script) raises like any
        failed attempt, so the task's retry policy applies and the job then stays failed.
        """
        manager = self.manager
        handle = await manager.start(
            command, env=env, cwd=workdir, stdin=workdir / "stdin", stdout=workdir / "stdout",
            stderr=None if self.merge_stderr else workdir / "stderr",
        )  # fmt: skip
        pids = self.links["pids"].repo if "pids" in self.links else None
        try:
            if pids is not None:
                await pids.dump(job, {
                    "pid": handle.pid, "host": manager.host, "workdir": str(workdir),
                    "run_id": run.id, "attempt": run.retry_attempt,
                })  # fmt: skip
            return await handle.wait()
        except asyncio.CancelledError:
            await asyncio.shield(handle.kill())
            raise
        finally:
            if pids is not None:
                await asyncio.shield(pids.delete(job))
