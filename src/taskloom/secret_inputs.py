"""`SecretStr` inputs through the queue: sealed at rest, opened only where the function runs.

A run's secret inputs are stored in its params as an envelope, `{"$sealed": <Fernet token>}`
(AES-128-CBC with HMAC-SHA256, from `cryptography`). The key is `TaskManager(secret_key=...)`
or `TASKLOOM_SECRET_KEY`, and old keys still open what they sealed (`old_secret_keys`); with
neither, each manager makes a random key of its own, which no other process can open.
Cache keys see a secret input only as an HMAC under a key derived from the same secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from . import serde
from .errors import SecretKeyError
from .interface import SEALED, is_sealed

if TYPE_CHECKING:
    from .task import Task

KEY_ENV = "TASKLOOM_SECRET_KEY"
# Marks an envelope sealed with a key no other process has, so the error there can say so.
EPHEMERAL = "ephemeral"
REDACTED = "**********"

KeyLike = str | bytes


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"taskloom", info=purpose).derive(secret)


def _key_bytes(key: KeyLike) -> bytes:
    """The key material: a Fernet key as given, any other text through HKDF."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw.strip():
        raise SecretKeyError(f"the secret key is empty; set {KEY_ENV} to a Fernet key")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw.strip()
    except (binascii.Error, ValueError):
        pass
    return base64.urlsafe_b64encode(_derive(raw, b"fernet key"))


def generate_key() -> str:
    """A new random key for `TASKLOOM_SECRET_KEY` (a Fernet key)."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens secret inputs with one primary key and any number of old ones.

    `key=None` reads `TASKLOOM_SECRET_KEY`; when that is unset too, a random per-instance key
    is used (`ephemeral` is then True).
    """

    def __init__(self, key: KeyLike | None = None, old_keys: Sequence[KeyLike] = ()) -> None:
        if key is None:
            key = os.environ.get(KEY_ENV) or None
        self.ephemeral = key is None
        primary = _key_bytes(generate_key() if key is None else key)
        self._fernet = MultiFernet([Fernet(primary), *(Fernet(_key_bytes(k)) for k in old_keys)])
        self._mac_key = _derive(primary, b"cache hmac")

    def seal(self, value: Any) -> dict[str, Any]:
        """The stored envelope of one secret value (any JSON-able value, sealed as JSON)."""
        token = self._fernet.encrypt(serde.dumps(value)).decode()
        envelope: dict[str, Any] = {SEALED: token}
        if self.ephemeral:
            envelope[EPHEMERAL] = True
        return envelope

    def open(self, envelope: Mapping[str, Any], *, task: str = "?", field: str = "?") -> Any:
        """The value sealed in `envelope`; SecretKeyError when no key here opens it."""
        try:
            return serde.loads(self._fernet.decrypt(str(envelope[SEALED]).encode()))
        except (InvalidToken, KeyError, ValueError):
            pass
        if envelope.get(EPHEMERAL):
            why = (
                "it was sealed with the per-process key of the manager that queued it, because "
                f"{KEY_ENV} was not set there"
            )
        else:
            why = "none of this manager's keys (secret_key, old_secret_keys) opens it"
        raise SecretKeyError(
            f"cannot decrypt secret input {field!r} of task {task!r}: {why}; set the same "
            f"{KEY_ENV} (or TaskManager(secret_key=...)) on every process that queues or runs it"
        )

    def rotate(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """The envelope re-sealed under the primary key (after adding a new key)."""
        token = self._fernet.rotate(str(envelope[SEALED]).encode()).decode()
        return {SEALED: token, **({EPHEMERAL: True} if self.ephemeral else {})}

    def digest(self, values: Mapping[str, Any]) -> str:
        """A keyed hash (HMAC-SHA256) of secret values, for cache keys: never the values."""
        data = serde.dumps(dict(sorted(values.items())))
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()[:32]

    # -- a task's params ---------------------------------------------------------------------------
    def seal_params(
        self, stored: dict[str, Any], model: Any, fields: frozenset[str]
    ) -> dict[str, Any]:
        """`stored` params plus each secret field of the validated `model`, sealed."""
        out = dict(stored)
        for name, value in secret_values(dict(model), fields).items():
            out[name] = self.seal(value)
        return out

    def open_params(
        self, params: Mapping[str, Any], fields: frozenset[str], *, task: str = "?"
    ) -> dict[str, Any]:
        """`params` with every sealed secret field opened (plain strings)."""
        out = dict(params)
        for name in fields:
            if is_sealed(out.get(name)):
                out[name] = self.open(out[name], task=task, field=name)
        return out


def reveal(value: Any) -> Any:
    """`value` in JSON form with every SecretStr inside it shown in plain text."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Mapping):
        return {str(k): reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [reveal(v) for v in value]
    if hasattr(value, "model_dump"):
        return reveal(dict(value))
    return value


def secret_values(kwargs: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """The plain (JSON-able) values of the secret inputs among validated call kwargs."""
    return {name: reveal(kwargs[name]) for name in sorted(fields) if name in kwargs}


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params for display: every sealed envelope shown as asterisks."""
    return {k: REDACTED if is_sealed(v) else v for k, v in params.items()}


def inputs_of(task: Task, params: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """The call kwargs of a stored run's params, sealed secret inputs opened with `box`."""
    fields = task.interface.secret_fields
    if fields and any(is_sealed(params.get(f)) for f in fields):
        if box is None:
            raise SecretKeyError(f"task {task.name!r} has sealed secret inputs and no key here")
        params = box.open_params(params, fields, task=task.name)
    return task.interface.call_kwargs(task.interface.validate_stored(params))


def secrets_digest(task: Task, kwargs: Mapping[str, Any], box: SecretBox | None) -> str | None:
    """The HMAC of a run's secret inputs for its cache key; None when it has none."""
    fields = task.interface.secret_fields
    if task.cache is not None:
        fields = fields - set(task.cache.ignore)
    if not fields:
        return None
    if box is None:
        raise SecretKeyError(f"task {task.name!r}: no secret key to hash its secret inputs with")
    return box.digest(secret_values(kwargs, frozenset(fields)))
