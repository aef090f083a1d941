"""The model's arguments (decoded JSON) turned into the types a tool function declares, where JSON has no such
type: enums, dataclasses, tuples, sets, ``float`` from an integer. Anything else passes unchanged."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["convert_arguments"]


def convert_arguments(arguments: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with each value converted to its parameter's hinted type (see the module)."""
    return {name: convert(value, hints[name]) if name in hints else value for name, value in arguments.items()}


def convert(value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` where JSON cannot carry it (see the module)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return convert(value, args[0])
    if value is None:
        return None
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, args)
    if isinstance(hint, type):
        converted = _convert_class(value, hint)
        if converted is not _UNCHANGED:
            return converted
    return _convert_container(value, origin or hint, args)


_UNCHANGED: Any = object()


def _convert_union(value: Any, members: tuple[Any, ...]) -> Any:
    for member in members:
        if member is type(None):
            continue
        try:
            if _accepts(value, member):
                return convert(value, member)
        except (TypeError, ValueError):
            continue
    return value


def _convert_class(value: Any, hint: type) -> Any:
    if issubclass(hint, enum.Enum):
        return hint(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        field_hints = typing.get_type_hints(hint)
        return hint(**{k: convert(v, field_hints.get(k, Any)) for k, v in value.items()})
    if is_typed_dict(hint) and isinstance(value, Mapping):
        field_hints = typing.get_type_hints(hint)
        return {k: convert(v, field_hints.get(k, Any)) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return _UNCHANGED


def _convert_container(value: Any, base: Any, args: tuple[Any, ...]) -> Any:
    if not isinstance(base, type):
        return value
    if isinstance(value, list):
        if base is tuple and args and args[-1] is not Ellipsis:
            return tuple(convert(v, a) for v, a in zip(value, args, strict=False))
        items = [convert(v, args[0]) if args else v for v in value]
        if base is tuple:
            return tuple(items)
        if issubclass(base, (set, frozenset)):
            return base(items)
        return items
    if isinstance(value, dict) and issubclass(base, Mapping) and len(args) == 2:
        return {k: convert(v, args[1]) for k, v in value.items()}
    return value


def _accepts(value: Any, hint: Any) -> bool:
    """Whether a JSON value could be of the type ``hint`` (to pick a union's member)."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if not isinstance(origin, type):
        return True
    if issubclass(origin, enum.Enum):
        return value in {m.value for m in origin}
    if dataclasses.is_dataclass(origin):
        return isinstance(value, dict)
    for kinds, accepted in _ACCEPTED:
        if issubclass(origin, kinds):
            return bool(accepted(value))
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Checked in order: bool before the numbers (bool is an int), mappings and strings before sequences.
_ACCEPTED: tuple[tuple[Any, Any], ...] = (
    ((bool,), lambda v: isinstance(v, bool)),
    ((int, float), _is_number),
    ((Mapping,), lambda v: isinstance(v, dict)),
    ((str,), lambda v: isinstance(v, str)),
    ((Sequence, set, frozenset), lambda v: isinstance(v, list)),
)


def is_typed_dict(hint: Any) -> bool:
    """Whether ``hint`` is a ``TypedDict`` class."""
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")
