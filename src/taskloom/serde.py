"""Payload encoding: orjson by default; pydantic models and dataclasses become JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel

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


def display(value: Any) -> str:
    """JSON text for people to read; `repr` for a value with no JSON form (a pickled result)."""
    try:
        return json.dumps(loads(dumps(value)))  # the stdlib's spacing reads better than orjson's
    except TypeError:
        return repr(value)
