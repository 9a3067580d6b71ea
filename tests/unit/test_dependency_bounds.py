"""Every dependency has an upper bound, and CI installs a tested version of each.

A release outside the range (a new major, or new type hints under mypy --strict) must not be
able to turn CI red without a change here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return reqs


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version
    return pins


def test_every_dependency_has_an_upper_bound() -> None:
    unbounded = [r for r in _requirements() if "<" not in r and "==" not in r]
    assert unbounded == []


def test_ci_pins_every_dependency_inside_its_range() -> None:
    from packaging.requirements import Requirement

    pins = _pins()
    for text in _requirements():
        req = Requirement(text)
        version = pins.get(_norm(req.name))
        assert version is not None, f"{req.name} is not pinned in .ci/constraints.txt"
        assert req.specifier.contains(version), f"{req.name}=={version} is outside {req}"


def test_ci_installs_with_the_constraints() -> None:
    assert "-c .ci/constraints.txt" in (ROOT / ".ci" / "run").read_text()
