"""Payload encoding: orjson by default; pydantic models and dataclasses become JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Encode to JSON bytes; raises TypeError for values that have no JSON form."""
    return orjson.dumps(obj, default=_default, option=_OPTS)


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes or text."""
    return orjson.loads(data)


def display(value: Any, indent: int | None = None) -> str:
    """JSON text for people to read: typed results (models, dataclasses, datetimes) in their
    JSON form, anything without one (a pickled object) as its `repr`."""
    return json.dumps(
        value,
        indent=indent,
        ensure_ascii=False,
        default=lambda v: to_jsonable_python(v, fallback=repr),
    )
