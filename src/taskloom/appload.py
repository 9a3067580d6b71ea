"""Find the user's TaskManager from `module:attribute` (the CLI's --app / TASKLOOM_APP)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .errors import ConfigError
from .manager import TaskManager
from .store import open_store


def load_object(spec: str) -> Any:
    """Import `module:attr` (a dotted attr path is allowed); the cwd is importable."""
    if ":" not in spec:
        raise ConfigError(f"--app must look like 'module:attribute', got {spec!r}")
    module_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for --app: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def load_manager(spec: str | None, store: str | None = None) -> TaskManager:
    """The manager named by `spec` or TASKLOOM_APP; a callable is called to build it.

    `store` (the CLI's --store / TASKLOOM_STORE) replaces the URL the app chose.
    """
    spec = spec or os.environ.get("TASKLOOM_APP")
    if not spec:
        raise ConfigError("no app: pass --app module:manager or set TASKLOOM_APP")
    obj = load_object(spec)
    if callable(obj) and not isinstance(obj, TaskManager):
        obj = obj()
    manager = getattr(obj, "manager", obj)
    if not isinstance(manager, TaskManager):
        raise ConfigError(f"{spec!r} is a {type(obj).__name__}, not a TaskManager")
    if store and store != getattr(manager.store, "url", None):
        if manager.connected:
            raise ConfigError(f"{spec!r} is connected already; its store cannot be replaced")
        manager.store = open_store(store)
    return manager
