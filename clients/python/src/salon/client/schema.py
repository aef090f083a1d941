"""JSON Schema for a Python function's arguments, read from its signature, type hints and docstring; and the
conversion of JSON arguments back to the types the function declares.

Small on purpose (the client depends on grpcio and protobuf only, no pydantic or jsonschema): ``str``,
``int``, ``float``, ``bool``, ``None``, ``Any``, ``list``/``tuple``/``set`` and sequences of those, ``dict``
with string keys, ``Literal``, ``Enum``, ``Optional``/unions, ``TypedDict`` and dataclasses, nested freely.
``Annotated[T, "text"]`` describes a parameter; so do Google-style (``Args:``), NumPy-style (``Parameters``)
and Sphinx-style (``:param name:``) docstrings. Anything else is refused at registration with a
:class:`TypeError` that says to pass the schema explicitly.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["FunctionSchema", "convert_arguments", "describe_function", "type_schema"]

_SECTION = re.compile(
    r"^(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|Examples?|Notes?|"
    r"See Also|Warnings?)\s*:?\s*$"
)
_UNDERLINE = re.compile(r"^-{3,}\s*$")
_GOOGLE_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?::.*)?$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


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
    signature = inspect.signature(fn)
    hints = _type_hints(fn, strict=schema)
    summary, documented = _parse_docstring(inspect.getdoc(fn) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    param_hints: dict[str, Any] = {}
    injected: dict[str, type] = {}
    open_ended = False
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
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
        if not schema:
            continue
        try:
            prop = type_schema(hint)
        except TypeError as exc:
            raise TypeError(f"parameter {name!r} of {_name(fn)}: {exc}; pass schema= explicitly") from None
        if name in documented and "description" not in prop:
            prop = {**prop, "description": documented[name]}
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif (default := _json_default(param.default)) is not _NO_DEFAULT:
            prop = {**prop, "default": default}
        properties[name] = prop
    built: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        built["required"] = required
    if not open_ended:
        built["additionalProperties"] = False
    return FunctionSchema(summary, built if schema else {}, param_hints, injected)


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


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of values of the type ``hint``; :class:`TypeError` for a type it cannot describe."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        text = next((a for a in args[1:] if isinstance(a, str)), None)
        return {**schema, "description": text} if text else schema
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in args if a is not type(None)]
        schemas = [type_schema(a) for a in members]
        if len(members) < len(args):
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema([m.value for m in hint])
    if _is_typed_dict(hint):
        return _typed_dict_schema(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_schema(hint)
    base = origin or hint
    if base is tuple and args and args[-1] is not Ellipsis:
        items = [type_schema(a) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if isinstance(base, type) and issubclass(base, (str, bytes)):
        raise TypeError(f"cannot describe {_type_name(hint)} as JSON")
    if isinstance(base, type) and issubclass(base, Mapping):
        if args and args[0] is not str:
            raise TypeError("JSON objects have string keys only")
        return {"type": "object", **({"additionalProperties": type_schema(args[1])} if args else {})}
    if isinstance(base, type) and issubclass(base, (Sequence, set, frozenset)):
        array: dict[str, Any] = {"type": "array"}
        if args:
            array["items"] = type_schema(args[0])
        if issubclass(base, (set, frozenset)):
            array["uniqueItems"] = True
        return array
    raise TypeError(f"cannot describe {_type_name(hint)} as JSON Schema")


def convert_arguments(arguments: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` (decoded JSON) with each value turned into the type its parameter declares where JSON has
    no such type (enums, dataclasses, tuples, sets); other values pass unchanged."""
    return {name: _convert(value, hints[name]) if name in hints else value for name, value in arguments.items()}


def _convert(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _convert(value, args[0])
    if value is None:
        return None
    if origin is typing.Union or origin is types.UnionType:
        for member in args:
            if member is type(None):
                continue
            try:
                if _accepts(value, member):
                    return _convert(value, member)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        field_hints = typing.get_type_hints(hint)
        return hint(**{k: _convert(v, field_hints.get(k, Any)) for k, v in value.items()})
    if _is_typed_dict(hint) and isinstance(value, Mapping):
        field_hints = typing.get_type_hints(hint)
        return {k: _convert(v, field_hints.get(k, Any)) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    base = origin or hint
    if isinstance(value, list) and isinstance(base, type):
        if base is tuple:
            if args and args[-1] is not Ellipsis:
                return tuple(_convert(v, a) for v, a in zip(value, args, strict=False))
            return tuple(_convert(v, args[0]) if args else v for v in value)
        if issubclass(base, (set, frozenset)):
            return base(_convert(v, args[0]) if args else v for v in value)
        if args:
            return [_convert(v, args[0]) for v in value]
    if isinstance(value, dict) and isinstance(base, type) and issubclass(base, Mapping) and len(args) == 2:
        return {k: _convert(v, args[1]) for k, v in value.items()}
    return value


def _accepts(value: Any, hint: Any) -> bool:
    """Whether a JSON value could be of the type ``hint`` (to pick a union's member)."""
    hint = _strip_annotated(hint)
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return True
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return value in {m.value for m in origin}
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if isinstance(origin, type) and (dataclasses.is_dataclass(origin) or _is_typed_dict(origin)):
        return isinstance(value, dict)
    if origin is bool:
        return isinstance(value, bool)
    if origin in (int, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return isinstance(value, dict)
    if isinstance(origin, type) and issubclass(origin, str):
        return isinstance(value, str)
    if isinstance(origin, type) and issubclass(origin, (Sequence, set, frozenset)):
        return isinstance(value, list)
    return True


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


def _is_typed_dict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


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


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the per-parameter descriptions of a docstring."""
    lines = doc.splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section = ""
    current = ""
    current_indent = 0
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            section, current = "sphinx", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif line.startswith(":") and section == "sphinx":
            current = ""  # :returns:, :raises: …
        elif _SECTION.match(line) and (line.endswith(":") or _UNDERLINE.match(following)):
            numpy_style = bool(_UNDERLINE.match(following))
            is_params = line.rstrip(":").strip().lower() in _PARAM_SECTIONS
            section = ("numpy" if numpy_style else "google") if is_params else "other"
            current = ""
            if numpy_style:
                i += 1  # the header's underline
        elif not section:
            summary.append(line)
        elif section in ("google", "numpy") and line:
            indent = len(raw) - len(raw.lstrip())
            match = (_GOOGLE_ARG if section == "google" else _NUMPY_ARG).match(line)
            if current and indent > current_indent:
                params[current] = f"{params[current]} {line}".strip()
            elif match:
                current, current_indent = match.group(1).lstrip("*"), indent
                params[current] = match.group(2).strip() if section == "google" else ""
        elif section == "sphinx" and current and line:
            params[current] = f"{params[current]} {line}".strip()
        i += 1
    text = "\n".join(summary).strip()
    return re.sub(r"\n{3,}", "\n\n", text), {k: v for k, v in params.items() if v}


_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
