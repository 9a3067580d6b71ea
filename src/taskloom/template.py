"""Flyte 2's `TaskTemplate` surface: documentation, reuse policy, and the overridable hooks.

`Task` inherits `TemplateHooks`; a subclass overrides a hook to change what the Kubernetes
executor builds (`container_args` is the Job's command, `custom_config` its annotations).
Each hook takes a `SerializationSettings` or None, and returns the reference's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Documentation:
    """A task's documentation: one line, and the full text (both default to the docstring)."""

    short_description: str | None = None
    long_description: str | None = None


@dataclass(frozen=True)
class ReusePolicy:
    """Keep warm processes for one task between runs (Flyte's `reusable=`).

    `replicas` processes serve the task; one idle for `idle_ttl` (seconds or a timedelta;
    None = until the worker stops) is stopped and started again on the next run.
    """

    replicas: int = 1
    idle_ttl: float | timedelta | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"ReusePolicy.replicas must be >= 1, got {self.replicas}")
        if self.idle_seconds is not None and self.idle_seconds <= 0:
            raise ConfigError(f"ReusePolicy.idle_ttl must be > 0 seconds, got {self.idle_ttl}")

    @property
    def idle_seconds(self) -> float | None:
        """`idle_ttl` in seconds."""
        ttl = self.idle_ttl
        return ttl.total_seconds() if isinstance(ttl, timedelta) else ttl


def to_reuse_policy(value: Any) -> ReusePolicy | None:
    """Normalise `reusable=`: True or a ReusePolicy keeps a warm process; None/False/"off" not."""
    if value is None or value is False or value == "off":
        return None
    if value is True:
        return ReusePolicy()
    if isinstance(value, ReusePolicy):
        return value
    raise ConfigError(f"reusable must be True, 'off' or a ReusePolicy, got {value!r}")


@dataclass(frozen=True)
class SerializationSettings:
    """What a hook knows about the Job being built for one attempt.

    `container` is the worker Deployment's container the Job copies; `run_id` and `attempt`
    name the attempt.
    """

    run_id: str
    attempt: int = 0
    namespace: str = "default"
    container: Mapping[str, Any] = field(default_factory=dict)


class TemplateHooks:
    """Flyte's `TaskTemplate` hooks with their defaults; `Task` inherits them."""

    def config(self, settings: SerializationSettings | None = None) -> dict[str, str]:
        """Extra key/value configuration for plugins; the built-in executors read none."""
        return {}

    def custom_config(self, settings: SerializationSettings | None = None) -> dict[str, str]:
        """Key/value configuration added to the annotations of the task's Kubernetes Jobs."""
        return {}

    def container_args(self, settings: SerializationSettings | None = None) -> list[str]:
        """The Job's command for the attempt `settings` names; [] without settings.

        The default runs `taskloom exec-run <run id>` behind the worker container's own
        wrapper (see `k8s.manifests.exec_argv`).
        """
        if settings is None:
            return []
        from .k8s.manifests import exec_argv

        return exec_argv(settings.container, settings.run_id)

    def data_loading_config(self, settings: SerializationSettings | None = None) -> Any:
        """Raw-container data loading (Flyte CoPilot); None: inputs travel as params."""
        return None

    def sql(self, settings: SerializationSettings | None = None) -> str | None:
        """The task's SQL, for SQL task plugins; None for a Python task."""
        return None
