"""Plain definitions attached to a task: retries, cache, resources, secrets, Kubernetes config."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

if TYPE_CHECKING:
    from .run import TaskRun


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed run is retried.

    `max_attempts` counts every attempt, the first included (1 = never retry; None = never
    stop). The wait before retry number n (1-based) is
    `min(wait * backoff ** (n - 1), max_wait)` plus a uniform extra in `[0, jitter]` seconds.
    Only exceptions that are instances of `exceptions` are retried.
    """

    max_attempts: int | None = 3
    wait: float = 1.0
    backoff: float = 2.0
    max_wait: float = 300.0
    exceptions: tuple[type[BaseException], ...] = (Exception,)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.wait < 0 or self.backoff < 1 or self.max_wait < 0 or self.jitter < 0:
            raise ConfigError("RetryPolicy: wait, max_wait, jitter >= 0 and backoff >= 1")
        if isinstance(self.exceptions, type):
            object.__setattr__(self, "exceptions", (self.exceptions,))

    @classmethod
    def from_retries(cls, retries: int) -> RetryPolicy:
        """`retry=3` means three retries after the first attempt (Flyte's `retries`)."""
        if retries < 0:
            raise ConfigError(f"retry must be >= 0, got {retries}")
        return cls(max_attempts=retries + 1, wait=0.0, backoff=1.0, max_wait=0.0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        base = min(self.wait * self.backoff ** max(attempt - 1, 0), self.max_wait)
        if self.jitter:
            base += (rng or random).uniform(0.0, self.jitter)
        return base

    def allows(self, attempts_made: int) -> bool:
        """True if another attempt may follow `attempts_made` attempts."""
        return self.max_attempts is None or attempts_made < self.max_attempts

    def retries_on(self, exc: BaseException) -> bool:
        """True if this kind of failure is retried.

        A failure that crossed a process (a `TaskFailedError` from a subprocess, a Job or a
        child run) is matched by its original type name, since its class is not rebuilt.
        """
        if isinstance(exc, self.exceptions):
            return True
        type_name = getattr(exc, "type_name", None)
        return type_name is not None and any(
            cls.__name__ == type_name or cls in (Exception, BaseException)
            for cls in self.exceptions
        )


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Cache:
    """Result caching: the key is task name + version + hash of the inputs not in `ignore`."""

    version: str | None = None
    ignore: tuple[str, ...] = ()
    behavior: Literal["auto", "override", "disable"] = "auto"
    salt: str = ""
    ttl_seconds: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ignore, list):
            object.__setattr__(self, "ignore", tuple(self.ignore))
        if self.behavior not in ("auto", "override", "disable"):
            raise ConfigError(f"Cache.behavior must be auto, override or disable: {self.behavior}")

    @property
    def enabled(self) -> bool:
        """False when caching is disabled."""
        return self.behavior != "disable"


CacheSpec = Cache | Literal["auto", "override", "disable"] | bool | None


def to_cache(spec: CacheSpec) -> Cache | None:
    """Normalise the forms `cache=` accepts (Flyte's strings, a bool, a Cache)."""
    if spec is None or spec is False or spec == "disable":
        return None
    if spec is True or spec == "auto":
        return Cache()
    if spec == "override":
        return Cache(behavior="override")
    if isinstance(spec, Cache):
        return spec if spec.enabled else None
    raise ConfigError(f"invalid cache setting: {spec!r}")


_MEM_UNITS = {
    "": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}  # fmt: skip


def parse_memory(value: str | int | None) -> int | None:
    """Bytes from a Kubernetes-style quantity such as '512Mi' or '1G'."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?\s*[bB]?\s*", value)
    if not m:
        raise ConfigError(f"invalid memory quantity {value!r} (use e.g. '512Mi', '2Gi')")
    return int(float(m.group(1)) * _MEM_UNITS[(m.group(2) or "").lower()])


def parse_cpu(value: str | int | float | None) -> float | None:
    """Cores from a Kubernetes-style quantity such as '500m' or '2'."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ConfigError(f"invalid cpu quantity {value!r} (use e.g. '500m', '2')") from None


@dataclass(frozen=True)
class Resources:
    """What one run needs: cpu cores, memory, gpus (Kubernetes-style quantities), and
    `custom` amounts of named resources (Ray custom resources, e.g. `{"ssd": 1}`)."""

    cpu: str | int | float | None = None
    memory: str | int | None = None
    gpu: int | float | None = None
    disk: str | None = None
    custom: Mapping[str, float] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        parse_cpu(self.cpu)
        parse_memory(self.memory)
        for name, amount in (self.custom or {}).items():
            if not name or not isinstance(amount, int | float) or amount <= 0:
                raise ConfigError(
                    f"custom resource {name!r}: the amount must be a positive number, "
                    f"got {amount!r}"
                )

    @property
    def cpu_cores(self) -> float | None:
        """Cores as a float."""
        return parse_cpu(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        """Memory in bytes."""
        return parse_memory(self.memory)

    def k8s(self) -> dict[str, str]:
        """The quantities as a Kubernetes resource map."""
        out: dict[str, str] = {}
        if self.cpu is not None:
            out["cpu"] = str(self.cpu)
        if self.memory is not None:
            out["memory"] = str(self.memory) if isinstance(self.memory, str) else f"{self.memory}"
        if self.gpu:
            out["nvidia.com/gpu"] = str(int(self.gpu))
        if self.disk is not None:
            out["ephemeral-storage"] = self.disk
        return out


@dataclass(frozen=True)
class Secret:
    """A secret resolved at run time from a file or an environment variable; never stored.

    `key` names it for `ctx.secrets[key]`; the value comes from `file` if given, else from the
    environment variable `env_var` (default: `key` upper-cased). On Kubernetes it becomes a
    `secretKeyRef` to secret `group` (default `key`) and key `key`, exposed as `as_env_var`.
    """

    key: str
    group: str | None = None
    env_var: str | None = None
    file: str | None = None
    as_env_var: str | None = None

    @property
    def source_env(self) -> str:
        """The environment variable read when no file is given."""
        return self.env_var or self.key.upper().replace("-", "_")

    @property
    def target_env(self) -> str:
        """The environment variable the value is exposed as inside a Job."""
        return self.as_env_var or self.key.upper().replace("-", "_")

    def resolve(self, environ: Mapping[str, str] | None = None) -> str:
        """Read the value now; raises ConfigError naming the source if it is missing."""
        if self.file:
            try:
                return Path(self.file).read_text().rstrip("\n")
            except OSError as exc:
                raise ConfigError(f"secret {self.key!r}: cannot read {self.file}: {exc}") from exc
        env = os.environ if environ is None else environ
        if self.source_env not in env:
            raise ConfigError(f"secret {self.key!r}: environment variable {self.source_env} unset")
        return env[self.source_env]


def resolve_secrets(secrets: tuple[Secret, ...]) -> dict[str, str]:
    """Resolve every secret of a task, keyed by `Secret.key`."""
    return {s.key: s.resolve() for s in secrets}


@contextmanager
def bound_secrets(secrets: tuple[Secret, ...], run: TaskRun) -> Iterator[None]:
    """Resolve `secrets` into `run.secrets` for the call, and drop them after.

    Resolved as late as possible, in the process that runs the function, and kept only in a
    private attribute of the live run: records, params and logs never carry them.
    """
    run._secrets = resolve_secrets(secrets) if secrets else {}
    try:
        yield
    finally:
        run._secrets = {}


class K8sResourceRequirements(BaseModel):
    """Kubernetes resource limits and requests for a Job's container."""

    model_config = ConfigDict(frozen=True)

    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None


def _env(name: str, default: str) -> str:
    """`TASKLOOM_K8S_<X>`, else aio-fluid's `FLUID_TASK_CONSUMER_K8S_<X>` (deprecated alias)."""
    if name in os.environ:
        return os.environ[name]
    alias = name.replace("TASKLOOM_K8S_", "FLUID_TASK_CONSUMER_K8S_", 1)
    return os.environ.get(alias, default)


# Taints and node labels the big clouds put on spot / preemptible capacity.
SPOT_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
     "effect": "NoSchedule"},
    {"key": "cloud.google.com/gke-preemptible", "operator": "Equal", "value": "true",
     "effect": "NoSchedule"},
    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot",
     "effect": "NoSchedule"},
)  # fmt: skip
SPOT_NODE_LABELS: tuple[tuple[str, str], ...] = (
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
)


def _spot_affinity() -> dict[str, Any]:
    # Preferred, not required: an interruptible run still starts on a cluster without spot nodes.
    return {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": key, "operator": "In", "values": [value]}]}}
            for key, value in SPOT_NODE_LABELS
        ]
    }  # fmt: skip


class K8sInterruptible(BaseModel):
    """What `interruptible=True` adds to a task's Job pods: tolerations and a node affinity.

    The defaults tolerate the spot / preemptible taints of GKE and AKS and prefer nodes
    labelled as spot capacity on GKE, AKS, EKS and Karpenter.
    """

    model_config = ConfigDict(frozen=True)

    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(t) for t in SPOT_TOLERATIONS]
    )
    node_affinity: dict[str, Any] = Field(default_factory=_spot_affinity)


class K8sConfig(BaseModel):
    """Where and how a cpu_bound task runs as a Kubernetes Job.

    Unset fields take the `TASKLOOM_K8S_*` environment variables when the config is built
    (aio-fluid's `FLUID_TASK_CONSUMER_K8S_*` names are read too, when the new one is unset).
    `interruptible` is what tasks with `interruptible=True` add to their pods.
    """

    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default_factory=lambda: _env("TASKLOOM_K8S_NAMESPACE", "default"))
    deployment: str = Field(
        default_factory=lambda: _env("TASKLOOM_K8S_DEPLOYMENT", "taskloom-worker")
    )
    container: str = Field(default_factory=lambda: _env("TASKLOOM_K8S_CONTAINER", "main"))
    resources: K8sResourceRequirements | None = None
    job_ttl: int = Field(default_factory=lambda: int(_env("TASKLOOM_K8S_JOB_TTL", "300")))
    sleep: float = Field(default_factory=lambda: float(_env("TASKLOOM_K8S_SLEEP", "2")))
    interruptible: K8sInterruptible = Field(default_factory=K8sInterruptible)


@dataclass(frozen=True)
class Trigger:
    """A Flyte-style trigger: fire the task on `schedule` (a Schedule, cron string, timedelta or
    seconds) with fixed `inputs`. A bad schedule raises ScheduleError here."""

    name: str
    schedule: Any
    inputs: Mapping[str, object] = field(default_factory=dict)
    auto_activate: bool = True

    def __post_init__(self) -> None:
        from .schedules import as_schedule

        object.__setattr__(self, "schedule", as_schedule(self.schedule))
