"""A task's typed interface: a pydantic model of its inputs and an adapter for its output."""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    PydanticSchemaGenerationError,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticSerializationError

from . import serde
from .errors import InvalidParamsError, PayloadTooLargeError, ResultEncodingError
from .run import TaskRun
from .serializers import JSON, Serializer


class _Inputs(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


@dataclass(frozen=True)
class Interface:
    """Inputs model, output adapter and whether the function takes the run context."""

    task_name: str
    inputs: type[BaseModel]
    output: TypeAdapter[Any]
    takes_context: bool
    input_names: tuple[str, ...]
    secret_fields: frozenset[str]
    returns_none: bool
    serializer: Serializer = JSON

    @classmethod
    def from_function(cls, name: str, fn: Callable[..., Any]) -> Interface:
        """Build the interface from `fn`'s signature and annotations."""
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolved forward refs: fall back to raw annotations
            hints = {}
        params = list(sig.parameters.values())
        takes_context = False
        if params:
            first = hints.get(params[0].name, params[0].annotation)
            if (
                first is TaskRun
                or first == "TaskRun"
                or (isinstance(first, type) and issubclass(first, TaskRun))
            ):
                takes_context = True
                params = params[1:]
        fields: dict[str, Any] = {}
        secret: set[str] = set()
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = hints.get(p.name, Any if p.annotation is p.empty else p.annotation)
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (ann, default)
            if _is_secret(ann):
                secret.add(p.name)
        model = create_model(f"{name}_inputs", __base__=_Inputs, **fields)
        # pydantic resolves annotations our own lookup could not (names local to a function)
        secret |= {n for n, f in model.model_fields.items() if _is_secret(f.annotation)}
        ret = hints.get("return", Any)
        returns_none = ret is None or ret is type(None)
        return cls(
            task_name=name,
            inputs=model,
            output=_adapter(Any if returns_none else ret),
            takes_context=takes_context,
            input_names=tuple(fields),
            secret_fields=frozenset(secret),
            returns_none=returns_none,
        )

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Turn a call's positional and keyword arguments into a params dict."""
        if len(args) > len(self.input_names):
            raise InvalidParamsError(
                self.task_name,
                [{"loc": (), "msg": f"takes {len(self.input_names)} positional inputs"}],
            )
        params = dict(zip(self.input_names, args, strict=False))
        for key, value in kwargs.items():
            if key in params:
                raise InvalidParamsError(self.task_name, [{"loc": (key,), "msg": "given twice"}])
            params[key] = value
        return params

    def validate(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate params; raises InvalidParamsError naming each bad field."""
        try:
            return self.inputs.model_validate(dict(params))
        except ValidationError as exc:
            raise InvalidParamsError(self.task_name, [dict(e) for e in exc.errors()]) from None

    def validate_stored(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate params read back from a run record (the worker side: unwraps pickles)."""
        if self.serializer.name == "json":
            return self.validate(params)
        return self.validate(
            {k: v if k in self.secret_fields else self.serializer.load(v, _ANY)
             for k, v in params.items()}
        )  # fmt: skip

    @cached_property
    def _many(self) -> TypeAdapter[list[Any]]:
        # list of the inputs model, built at run time from this task's signature
        return TypeAdapter(cast(type[list[Any]], list.__class_getitem__(self.inputs)))

    def stored_many(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
        """The stored params of many calls, validated and dumped in one pydantic call each;
        None if one is invalid or cannot be stored (or inputs are secret, or the serializer
        is not JSON): `validate` and `stored_params`, one by one, then name the problem."""
        if self.serializer.name != "json" or self.secret_fields:
            return None
        try:
            models = self._many.validate_python([dict(p) for p in items])
            stored: list[dict[str, Any]] = self._many.dump_python(models, mode="json")
        except (ValidationError, PydanticSerializationError):
            return None
        return stored

    def call_kwargs(self, model: BaseModel) -> dict[str, Any]:
        """The validated inputs as keyword arguments (typed objects kept)."""
        return {name: getattr(model, name) for name in self.input_names}

    def stored_params(self, model: BaseModel) -> dict[str, Any]:
        """The stored form kept on the run: defaults included, secret fields left out.

        Raises InvalidParamsError naming each input the serializer cannot encode.
        """
        if self.serializer.name == "json":
            try:
                return model.model_dump(mode="json", exclude=set(self.secret_fields) or None)
            except PydanticSerializationError:
                pass  # name the culprits below
        stored: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for name in self.input_names:
            if name in self.secret_fields:
                continue
            value = getattr(model, name)
            try:
                if self.serializer.name == "json":
                    stored[name] = model.model_dump(mode="json", include={name})[name]
                else:
                    stored[name] = self.serializer.dump(value, _ANY)
            except (PydanticSerializationError, TypeError, ValueError) as exc:
                errors.append({"loc": (name,), "msg": self._cannot(value, exc)})
        if errors:
            raise InvalidParamsError(self.task_name, errors)
        return stored

    def encode_result(self, value: Any) -> Any:
        """The result's stored form; raises ResultEncodingError if the serializer has none."""
        if self.returns_none:
            return None
        try:
            return self.serializer.dump(value, self.output)
        except Exception as exc:
            raise ResultEncodingError(
                f"result of task {self.task_name!r}: {self._cannot(value, exc)}"
            ) from exc

    def decode_result(self, data: Any) -> Any:
        """Rebuild the result as the declared return type from its stored form."""
        if self.returns_none or data is None:
            return data
        return self.serializer.load(data, self.output)

    def _cannot(self, value: Any, exc: BaseException) -> str:
        hint = (
            " (serializer='pickle' keeps any picklable object; see the docs for its risk)"
            if self.serializer.name == "json"
            else ""
        )
        return (
            f"{type(value).__name__} value cannot be encoded with the "
            f"{self.serializer.name} serializer: {exc}{hint}"
        )


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    """An adapter for the declared return type; a plain class is checked with isinstance."""
    try:
        return TypeAdapter(annotation)
    except PydanticSchemaGenerationError:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))


def check_size(task: str, what: str, data: Any, limit: int | None) -> int:
    """Raise PayloadTooLargeError if `data`'s JSON form is over `limit` bytes; return its size."""
    if not limit:
        return 0
    try:
        size = len(serde.dumps(data))
    except TypeError as exc:
        raise InvalidParamsError(
            task, [{"loc": (), "msg": f"{what} has no JSON form: {exc}"}]
        ) from exc
    if size > limit:
        raise PayloadTooLargeError(task, what, size, limit)
    return size


SEALED = "$sealed"  # the key of a stored secret input's envelope (see `secret_inputs`)


def is_sealed(value: Any) -> bool:
    """True for a stored secret-input envelope."""
    return isinstance(value, Mapping) and isinstance(value.get(SEALED), str)


def input_hash(params: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """A stable hash of the JSON form of the params, skipping `ignore` and sealed secrets
    (their ciphertext differs at every sealing; cache keys add an HMAC of them instead)."""
    data = {k: v for k, v in sorted(params.items()) if k not in ignore and not is_sealed(v)}
    return hashlib.sha256(serde.dumps(data)).hexdigest()[:32]
