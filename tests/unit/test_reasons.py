"""Error reasons: one vocabulary (storage.reasons.Reason) that every raiser uses and every reader maps back."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest
from google.protobuf.duration_pb2 import Duration

from salon.engine.gateway import _raise_refusal
from salon.storage.errors import FailedPrecondition, NotFound, ResourceExhausted, SalonError
from salon.storage.ids import require_id
from salon.storage.reasons import Reason, id_reason
from salon.v1 import turn_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "providers", "actors", "storage", "otel")
_UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[A-Z]{5,}")


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _UPPER_SNAKE.fullmatch(node.value):
        return node.value
    return None


def _reason_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Reason strings written out: ``reason="X"`` arguments, ``reason = "X"`` class attributes, and the first
    argument of ``.error("X", ...)`` / ``.fail("X", ...)`` (how a session ends a turn)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "reason" and (value := _literal(keyword.value)):
                    found.append((node.lineno, value))
            name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name in ("error", "fail") and node.args and (value := _literal(node.args[0])):
                found.append((node.lineno, value))
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = any(isinstance(t, ast.Name) and t.id == "reason" for t in targets)
            if named and (value := _literal(node.value)):
                found.append((node.lineno, value))
    return found


def _sources() -> list[pathlib.Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_reason_written_in_the_code_is_in_the_vocabulary() -> None:
    unknown = [
        f"{path.relative_to(ROOT)}:{line}: {value}"
        for path in _sources()
        for line, value in _reason_literals(ast.parse(path.read_text()))
        if Reason.from_wire(value) is None
    ]
    assert not unknown, "reasons missing from storage.reasons.Reason:\n" + "\n".join(unknown)


def test_the_scan_finds_reasons() -> None:
    tree = ast.parse('raise NotFound("m", reason="NO_SUCH_REASON")\nclass E:\n    reason = "ANOTHER_ONE"\n')
    assert [value for _, value in _reason_literals(tree)] == ["NO_SUCH_REASON", "ANOTHER_ONE"]


def test_every_id_field_has_its_reason() -> None:
    fields: set[str] = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            called = getattr(node, "func", None)
            if getattr(called, "id", getattr(called, "attr", "")) != "require_id":
                continue
            assert isinstance(node, ast.Call)
            if len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                fields.add(str(node.args[1].value))
    assert fields, "no require_id call found"
    assert {f: id_reason(f) for f in fields if id_reason(f) is Reason.INVALID_ARGUMENT} == {}


def test_an_invalid_id_names_its_field_in_the_reason() -> None:
    with pytest.raises(SalonError) as info:
        require_id("not an id", "session_id")
    assert info.value.reason == "INVALID_SESSION_ID"
    assert id_reason("no_such_field") is Reason.INVALID_ARGUMENT


def test_members_are_their_wire_strings() -> None:
    for member in Reason:
        assert member == member.value == member.name
        assert Reason.from_wire(member.value) is member
    assert Reason.from_wire("A_REASON_FROM_A_NEWER_PEER") is None


@pytest.mark.parametrize(
    ("reason", "error"),
    [("SESSION_BUSY", FailedPrecondition), ("TOO_MANY_TURNS", ResourceExhausted), ("SESSION_NOT_FOUND", NotFound)],
)
def test_a_refused_turn_becomes_its_status(reason: str, error: type[SalonError]) -> None:
    turn_error = turn_pb2.TurnError(reason=reason, message="m", retry_after=Duration(seconds=1, nanos=500_000_000))
    with pytest.raises(error) as info:
        _raise_refusal(turn_error)
    assert (info.value.reason, info.value.message, info.value.retry_after_s) == (reason, "m", 1.5)


@pytest.mark.parametrize("reason", ["MODEL_UNAVAILABLE", "NOT_A_KNOWN_REASON", ""])
def test_other_turn_errors_are_not_refusals(reason: str) -> None:
    _raise_refusal(turn_pb2.TurnError(reason=reason, message="m"))
