"""How a task's inputs and result are kept in the store: JSON (default) or opt-in pickle.

Every store keeps JSON. The pickle serializer wraps each pickled value in a one-key envelope
(`{"__pickle__": "<base64>"}`), so records stay readable by every backend and tool, while the
values themselves can be any picklable Python object.

Loading a pickle runs code chosen by whoever wrote it: use `serializer="pickle"` only when
everything that can write to the store is trusted.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any, Literal, Protocol

from pydantic import TypeAdapter, ValidationError

from . import serde
from .errors import ConfigError

SerializerName = Literal["json", "pickle"]
ENVELOPE = "__pickle__"


class Serializer(Protocol):
    """Turns one value into its stored (JSON-compatible) form and back."""

    name: str

    def dump(self, value: Any, adapter: TypeAdapter[Any]) -> Any:
        """The stored form of `value`; raises TypeError or ValueError when it has none."""
        ...

    def load(self, data: Any, adapter: TypeAdapter[Any]) -> Any:
        """The value rebuilt from its stored form (as the declared type where possible)."""
        ...


class JsonSerializer:
    """The default: values become JSON through pydantic, and come back as the declared type."""

    name = "json"

    def dump(self, value: Any, adapter: TypeAdapter[Any]) -> Any:
        """JSON form through the declared type (models, dataclasses, datetimes included)."""
        data = adapter.dump_python(value, mode="json")
        serde.dumps(data)  # a value pydantic let through (Any) must still be JSON
        return data

    def load(self, data: Any, adapter: TypeAdapter[Any]) -> Any:
        """The declared type rebuilt from JSON; data that no longer fits it comes back as is."""
        try:
            return adapter.validate_python(data)
        except ValidationError:
            return data


class PickleSerializer:
    """Opt-in: any picklable object, at the price of trusting the store (see the module doc)."""

    name = "pickle"

    def dump(self, value: Any, adapter: TypeAdapter[Any]) -> Any:
        """A `{"__pickle__": base64}` envelope."""
        try:
            raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"cannot be pickled: {exc}") from exc
        return {ENVELOPE: base64.b64encode(raw).decode("ascii")}

    def load(self, data: Any, adapter: TypeAdapter[Any]) -> Any:
        """The unpickled object; anything that is not an envelope (already loaded) as is."""
        if isinstance(data, dict) and set(data) == {ENVELOPE}:
            return pickle.loads(base64.b64decode(data[ENVELOPE]))
        return data


JSON: Serializer = JsonSerializer()
_SERIALIZERS: dict[str, Serializer] = {"json": JSON, "pickle": PickleSerializer()}


def get_serializer(name: str | None) -> Serializer:
    """The serializer called `name` (None means JSON); ConfigError for an unknown name."""
    try:
        return _SERIALIZERS[name or "json"]
    except KeyError:
        raise ConfigError(
            f"serializer must be one of {', '.join(_SERIALIZERS)}, got {name!r}"
        ) from None
