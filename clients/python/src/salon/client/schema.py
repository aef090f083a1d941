"""JSON Schema for a Python function's arguments, read from its signature, type hints and docstring.

Small on purpose (the client depends on grpcio and protobuf only, no pydantic or jsonschema): ``str``,
``int``, ``float``, ``bool``, ``None``, ``Any``, ``list``/``tuple``/``set`` and sequences of those, ``dict``
with string keys, ``Literal``, ``Enum``, ``Optional``/unions, ``TypedDict`` and dataclasses, nested freely.
``Annotated[T, "text"]`` describes a parameter; so do Google-style (``Args:``), NumPy-style (``Parameters``)
and Sphinx-style (``:param name:``) docstrings (:mod:`salon.client.docstrings`). Anything else is refused at
registration with a :class:`TypeError` that says to pass the schema explicitly. The model's arguments are
turned back into the hinted types by :mod:`salon.client.arguments`.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from salon.client.arguments import convert_arguments, is_typed_dict
from salon.client.docstrings import parse_docstring

__all__ = ["FunctionSchema", "convert_arguments", "describe_function", "type_schema"]


@dataclasses.dataclass(frozen=True)
class FunctionSchema:
    """What a function tells about itself as a tool."""

    description: str
    """The docstring's text before its first section (``Args:``, ``Returns:`` …)."""
    schema: dict[str, Any]
    """JSON Schema (an object) of its keyword arguments."""
    hints: dict[str, Any]
    """The type hint of each parameter in the schema (for :func:`convert_arguments`)."""
    injected: dict[str, type]
    """Parameters filled by the client rather than the model, by the class they are annotated with."""


def describe_function(fn: Callable[..., Any], *, inject: Sequence[type] = (), schema: bool = True) -> FunctionSchema:
    """The description and argument schema of ``fn``. Parameters annotated with one of the ``inject`` classes
    are left out of the schema (the caller fills them in). With ``schema=False`` (the caller has its own) no
    schema is built and hints that do not resolve are no error."""
    hints = _type_hints(fn, strict=schema)
    doc = parse_docstring(inspect.getdoc(fn) or "")
    built = _ObjectSchema()
    param_hints: dict[str, Any] = {}
    injected: dict[str, type] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            built.open_ended = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        hint = hints.get(name, Any)
        target = next((cls for cls in inject if _strip_annotated(hint) is cls), None)
        if target is not None:
            injected[name] = target
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"parameter {name!r} of {_name(fn)} is positional-only: tools are called with keywords")
        param_hints[name] = hint
        if schema:
            built.add(name, _parameter_schema(fn, name, hint, param.default, doc.params.get(name)), param.default)
    return FunctionSchema(doc.summary, built.schema() if schema else {}, param_hints, injected)


@dataclasses.dataclass
class _ObjectSchema:
    """The object schema of a function's keyword arguments, built parameter by parameter."""

    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    required: list[str] = dataclasses.field(default_factory=list)
    open_ended: bool = False

    def add(self, name: str, prop: dict[str, Any], default: Any) -> None:
        self.properties[name] = prop
        if default is inspect.Parameter.empty:
            self.required.append(name)

    def schema(self) -> dict[str, Any]:
        built: dict[str, Any] = {"type": "object", "properties": self.properties}
        if self.required:
            built["required"] = self.required
        if not self.open_ended:
            built["additionalProperties"] = False
        return built


def _parameter_schema(
    fn: Callable[..., Any], name: str, hint: Any, default: Any, described: str | None
) -> dict[str, Any]:
    try:
        prop = type_schema(hint)
    except TypeError as exc:
        raise TypeError(f"parameter {name!r} of {_name(fn)}: {exc}; pass schema= explicitly") from None
    if described and "description" not in prop:
        prop = {**prop, "description": described}
    if default is not inspect.Parameter.empty and (shown := _json_default(default)) is not _NO_DEFAULT:
        prop = {**prop, "default": shown}
    return prop


def _type_hints(fn: Callable[..., Any], *, strict: bool = True) -> dict[str, Any]:
    """The resolved type hints of ``fn``'s parameters. A hint that names something out of reach (a class local
    to a function, under ``from __future__ import annotations``) is refused rather than read as ``Any``, unless
    not ``strict`` (then it is left out)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    for name, written in getattr(fn, "__annotations__", {}).items():
        if not isinstance(written, str):
            hints[name] = written
            continue
        try:
            hints[name] = typing.get_type_hints(_Holder(written, namespace), include_extras=True)["value"]
        except Exception:
            if name != "return" and strict:
                raise TypeError(
                    f"parameter {name!r} of {_name(fn)}: its type hint {written!r} does not resolve; "
                    "pass schema= explicitly"
                ) from None
    return hints


class _Holder:
    """An object whose one annotation is a hint to resolve in a given namespace (``typing.get_type_hints`` does
    the resolving, as it would for the function)."""

    def __init__(self, hint: str, namespace: dict[str, Any]) -> None:
        self.__annotations__ = {"value": hint}
        self.__globals__ = namespace


_SCALARS: dict[Any, dict[str, Any]] = {
    Any: {},
    inspect.Parameter.empty: {},
    object: {},
    None: {"type": "null"},
    type(None): {"type": "null"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
}


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of values of the type ``hint``; :class:`TypeError` for a type it cannot describe."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        text = next((a for a in args[1:] if isinstance(a, str)), None)
        return {**schema, "description": text} if text else schema
    try:
        if hint in _SCALARS:
            return dict(_SCALARS[hint])
    except TypeError:  # an unhashable hint: not a scalar
        pass
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if origin is typing.Union or origin is types.UnionType:
        return _union_schema(args)
    if isinstance(hint, type) and (described := _class_schema(hint)) is not None:
        return described
    return _container_schema(hint, origin or hint, args)


def _union_schema(args: tuple[Any, ...]) -> dict[str, Any]:
    members = [a for a in args if a is not type(None)]
    schemas = [type_schema(a) for a in members]
    if len(members) < len(args):
        schemas.append({"type": "null"})
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _class_schema(hint: type) -> dict[str, Any] | None:
    if issubclass(hint, enum.Enum):
        return _enum_schema([m.value for m in hint])
    if is_typed_dict(hint):
        return _typed_dict_schema(hint)
    if dataclasses.is_dataclass(hint):
        return _dataclass_schema(hint)
    return None


def _container_schema(hint: Any, base: Any, args: tuple[Any, ...]) -> dict[str, Any]:
    if not isinstance(base, type) or issubclass(base, (str, bytes)):
        raise TypeError(f"cannot describe {_type_name(hint)} as JSON Schema")
    if base is tuple and args and args[-1] is not Ellipsis:
        items = [type_schema(a) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if issubclass(base, Mapping):
        if args and args[0] is not str:
            raise TypeError("JSON objects have string keys only")
        return {"type": "object", **({"additionalProperties": type_schema(args[1])} if args else {})}
    if issubclass(base, (Sequence, set, frozenset)):
        array: dict[str, Any] = {"type": "array"}
        if args:
            array["items"] = type_schema(args[0])
        if issubclass(base, (set, frozenset)):
            array["uniqueItems"] = True
        return array
    raise TypeError(f"cannot describe {_type_name(hint)} as JSON Schema")


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _typed_dict_schema(hint: Any) -> dict[str, Any]:
    field_hints = typing.get_type_hints(hint, include_extras=True)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: type_schema(h) for name, h in field_hints.items()},
        "additionalProperties": False,
    }
    required = [name for name in field_hints if name in hint.__required_keys__]
    if required:
        schema["required"] = required
    return schema


def _dataclass_schema(hint: type) -> dict[str, Any]:
    field_hints = typing.get_type_hints(hint, include_extras=True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(hint):
        if not f.init:
            continue
        properties[f.name] = type_schema(field_hints.get(f.name, Any))
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_NO_DEFAULT: Any = object()


def _json_default(value: Any) -> Any:
    """A parameter's default as JSON, or ``_NO_DEFAULT`` when it has no JSON form worth showing."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return _NO_DEFAULT


def _strip_annotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
