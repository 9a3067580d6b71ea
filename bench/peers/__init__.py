"""One module per benchmarked system; each exposes `SYSTEM`, a `bench.peers.base.System`.

Modules are imported only when their system is selected, so a missing peer library costs
nothing until it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util

from .base import System

#: system name -> (module, the import that proves the library is installed)
MODULES: dict[str, tuple[str, str]] = {
    "taskloom": ("bench.peers.taskloom", "taskloom"),
    "huey": ("bench.peers.huey", "huey"),
    "saq": ("bench.peers.saq", "saq"),
    "arq": ("bench.peers.arq", "arq"),
    "dramatiq": ("bench.peers.dramatiq", "dramatiq"),
    "procrastinate": ("bench.peers.procrastinate", "procrastinate"),
    "celery": ("bench.peers.celery", "celery"),
    "redis-floor": ("bench.peers.redis_floor", "redis"),
}

PEERS = tuple(name for name in MODULES if name != "taskloom")


def installed(name: str) -> bool:
    """True if the library behind system `name` can be imported here."""
    return importlib.util.find_spec(MODULES[name][1]) is not None


def load(name: str) -> System:
    """The `System` object of `name` (imports its module)."""
    module = importlib.import_module(MODULES[name][0])
    system: System = module.SYSTEM
    return system
