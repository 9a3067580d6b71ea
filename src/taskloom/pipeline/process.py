"""ProcessTask: a job is a script rendered from a template and run as a subprocess.

The script runs in a scratch directory of its own, in a new process group (so a timeout or a
cancel kills everything it started). Inputs are given as paths: a file repository's own file,
or a copy of the blob for other repositories. Outputs are written by the script to paths in
the scratch directory and copied into their repositories atomically only after it exits 0,
together with the captured stdout and stderr; a failed job leaves no output behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Final

from ..errors import NonRetryableError, TaskloomError
from ..policies import Resources, RetryPolicy
from ..run import TaskRun
from .kinds import PipelineTask
from .repositories import FileRepository, KeySet, Repository

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_BUILTIN_VARS = ("job", "task", "run_id", "attempt", "workdir")
_SPECIAL_LINKS = ("done", "live", "stdin", "stdout", "stderr")
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
    ) -> None:
        super().__init__(
            name, done=done, ready=ready, resources=resources, retry=retry, timeout=timeout
        )
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

    async def execute(self, job: str, run: TaskRun) -> Any:
        """Stage inputs, run the script, store outputs on success; returns its exit status."""
        if not self.template:
            self.template = self._load_template()
        scratch = Path(tempfile.mkdtemp(prefix=f"taskloom-{self.name}-", dir=self.scratch_dir))
        try:
            return await self._run_in(scratch, job, run)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _stage(self, scratch: Path, job: str) -> tuple[dict[str, str], dict[str, Path]]:
        """Paths for every data link; outputs are collected from `outputs` after the run."""
        paths: dict[str, str] = {}
        outputs: dict[str, Path] = {}
        (scratch / "in").mkdir()
        (scratch / "out").mkdir()
        for name, link in self.links.items():
            if name in _SPECIAL_LINKS or link.is_status:
                continue
            if link.is_output:
                outputs[name] = scratch / "out" / name
                paths[name] = str(outputs[name])
                if link.is_input:  # updated in place: start from the current value
                    with contextlib.suppress(KeyError):
                        outputs[name].write_bytes(await link.repo.read(job))
            elif isinstance(link.repo, FileRepository):
                paths[name] = str(link.repo.path_of(job))
            else:
                target = scratch / "in" / name
                with contextlib.suppress(KeyError):  # an optional input may be absent
                    target.write_bytes(await link.repo.read(job))
                paths[name] = str(target)
        return paths, outputs

    async def _run_in(self, scratch: Path, job: str, run: TaskRun) -> dict[str, Any]:
        paths, outputs = await self._stage(scratch, job)
        values = {
            "job": job, "task": self.name, "run_id": run.id,
            "attempt": str(run.retry_attempt), "workdir": str(scratch), **paths,
        }  # fmt: skip
        script = scratch / "script"
        script.write_text(render(self.template, values))
        script.chmod(0o700)
        command = [str(script)] if self.template.startswith("#!") else ["/bin/sh", str(script)]
        env = {
            **os.environ, **self.environ, "TASKLOOM_JOB": job, "TASKLOOM_TASK": self.name,
            "TASKLOOM_RUN_ID": run.id, **{_env_name(k): v for k, v in paths.items()},
        }  # fmt: skip
        stdin_path = scratch / "stdin"
        if "stdin" in self.links:
            with contextlib.suppress(KeyError):
                stdin_path.write_bytes(await self.links["stdin"].repo.read(job))
        stdin_path.touch()
        out_path, err_path = scratch / "stdout", scratch / "stderr"
        with stdin_path.open("rb") as fin, out_path.open("wb") as fout, err_path.open("wb") as ferr:
            code = await self._spawn(command, env, scratch, fin, fout, ferr)
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
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        fin: IO[bytes],
        fout: IO[bytes],
        ferr: IO[bytes],
    ) -> int:
        """Run the script to its end; a cancel (timeout, abort, drain) kills its process group.

        Failing to start (a missing interpreter, an unexecutable script) raises like any
        failed attempt, so the task's retry policy applies and the job then stays failed.
        """
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=fin, stdout=fout,
            stderr=subprocess.STDOUT if self.merge_stderr else ferr,
            cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            return await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            raise
