"""Ids: validation and UUIDv7 generation."""

from __future__ import annotations

import time
import uuid

import pytest

from salon.storage.errors import InvalidArgument
from salon.storage.ids import is_valid_id, require_id, uuid7


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _wait_ms(ms: int) -> None:
    """Wait until the millisecond clock has moved by ``ms`` (a condition, not a fixed sleep)."""
    target = _now_ms() + ms
    while _now_ms() < target:
        time.sleep(0.0005)  # wait-ok: polls the clock until the condition holds


def test_uuid7_is_version_7_rfc_variant() -> None:
    for _ in range(100):
        value = uuid.UUID(uuid7())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_uuid7_embeds_the_creation_time() -> None:
    before = _now_ms()
    value = uuid.UUID(uuid7())
    after = _now_ms()
    assert before <= value.int >> 80 <= after


def test_uuid7_is_canonical_and_a_valid_id() -> None:
    value = uuid7()
    assert len(value) == 36
    assert str(uuid.UUID(value)) == value
    assert is_valid_id(value)


def test_uuid7_are_unique() -> None:
    ids = {uuid7() for _ in range(5000)}
    assert len(ids) == 5000


def test_uuid7_sort_in_creation_order_across_milliseconds() -> None:
    ids = []
    for _ in range(5):
        ids.append(uuid7())
        _wait_ms(2)
    assert sorted(ids) == ids


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 64, "0"])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)
    assert require_id(value, "session_id") == value


@pytest.mark.parametrize("value", ["", "a.b", "a*", ">", "a b", "x" * 65, "é", "a\n"])
def test_invalid_ids(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidArgument) as info:
        require_id(value, "turn_id")
    assert info.value.reason == "INVALID_TURN_ID"
    assert "turn_id" in str(info.value)
