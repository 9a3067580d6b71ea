"""The benchmark's own virtualenv `bench/.venv`: taskloom (editable) plus every peer.

Peers never go into the project's venv: their pins (redis, pydantic, psycopg) are theirs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
#: Peer requirements, installed one by one so one that fails does not take the others down.
PEER_REQUIREMENTS = (
    "huey",
    "saq[redis,postgres]",
    "arq",
    "dramatiq[redis]",
    "procrastinate",
    "psycopg[binary]",
    "celery[redis,sqlalchemy]",
)
#: Where `--quick` puts huey alone when no bench venv exists (outside the repo, reusable).
QUICK_SITE = Path(tempfile.gettempdir()) / "taskloom-bench-huey"


def in_venv() -> bool:
    """True when this interpreter is bench/.venv's."""
    return Path(sys.prefix).resolve() == VENV.resolve()


def exists() -> bool:
    """True once `--setup` created the venv."""
    return VENV_PYTHON.exists()


def _pip(python: Path | str, *args: str) -> bool:
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode == 0


def setup(say: Callable[[str], None]) -> list[str]:
    """Create (or update) bench/.venv; return the requirements that failed to install."""
    if not exists():
        say(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say("installing taskloom[redis,postgres] (editable) from the repo")
    if not _pip(VENV_PYTHON, "-e", f"{ROOT}[redis,postgres]"):
        raise RuntimeError("installing taskloom into bench/.venv failed")
    failed = []
    for requirement in PEER_REQUIREMENTS:
        say(f"installing {requirement}")
        if not _pip(VENV_PYTHON, requirement):
            failed.append(requirement)
    return failed


def reexec(argv: list[str]) -> None:
    """Replace this process with `python -m bench ARGV` inside bench/.venv (never returns)."""
    os.chdir(ROOT)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), "-m", "bench", *argv])


def quick_huey(say: Callable[[str], None]) -> bool:
    """Make huey importable here and in worker processes without a bench venv.

    huey is one pure-Python wheel with no dependencies, so `pip install --target` into a temp
    directory takes a few seconds: the `--quick` smoke run keeps a real peer in CI and stays
    well inside its minute, where building bench/.venv would spend half of it.
    """
    if importlib.util.find_spec("huey") is not None:
        return True
    if not (QUICK_SITE / "huey").is_dir():
        say(f"installing huey alone into {QUICK_SITE}")
        if not _pip(sys.executable, "--target", str(QUICK_SITE), "--no-deps", "huey"):
            return False
    sys.path.insert(0, str(QUICK_SITE))
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{QUICK_SITE}{os.pathsep}{path}" if path else str(QUICK_SITE)
    importlib.invalidate_caches()
    return importlib.util.find_spec("huey") is not None
