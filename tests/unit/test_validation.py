"""Request checks: each problem has a reason, and no message ever echoes the caller's input."""

from __future__ import annotations

import pytest

from salon.engine.validation import (
    DEFAULT_PAGE_SIZE,
    MAX_METADATA_ENTRIES,
    check_create_session,
    check_metadata,
    check_send_turn,
    check_text,
    page_size,
)
from salon.storage.errors import InvalidArgument
from salon.v1 import conversation_service_pb2 as cs_pb2

CANARY = "CANARYzq7x"
"""A distinctive string put inside every bad input: it must never appear in an error message."""


def _send(**fields: object) -> cs_pb2.SendTurnRequest:
    values: dict[str, object] = {"session_id": "s1", "text": "hello"}
    values.update(fields)
    return cs_pb2.SendTurnRequest(**values)  # type: ignore[arg-type]


def _rejected(request: cs_pb2.SendTurnRequest, max_text_bytes: int = 1000) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check_send_turn(request, max_text_bytes)
    return info.value


def test_a_good_request_passes() -> None:
    check_send_turn(_send(idempotency_key="key-1", metadata={"k": "v"}), 1000)
    check_send_turn(_send(text="é" * 500), 1000)  # exactly 1000 bytes


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_blank_text(text: str) -> None:
    error = _rejected(_send(text=text))
    assert error.reason == "EMPTY_TEXT"
    assert "text" in str(error)


def test_oversize_text_is_measured_in_utf8_bytes() -> None:
    text = CANARY + "é" * 500  # 510 characters, 1010 bytes
    assert len(text) <= 1000
    error = _rejected(_send(text=text), max_text_bytes=1000)
    assert error.reason == "TEXT_TOO_LARGE"
    assert CANARY not in str(error)
    assert "é" not in str(error)
    assert "1010" in str(error)
    assert "1000" in str(error)


def test_check_text_limit_is_inclusive() -> None:
    check_text("€" * 10, 30)  # 3 bytes each
    with pytest.raises(InvalidArgument) as info:
        check_text("€" * 10 + CANARY, 30)
    assert info.value.reason == "TEXT_TOO_LARGE"
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    "session_id",
    [f"{CANARY}.b", "", CANARY + "x" * (65 - len(CANARY)), f"{CANARY}*", f"{CANARY}>", f"{CANARY} 1"],
)
def test_bad_session_id(session_id: str) -> None:
    error = _rejected(_send(session_id=session_id))
    assert error.reason == "INVALID_SESSION_ID"
    assert "session_id" in str(error)
    assert CANARY not in str(error)
    if session_id:
        assert session_id not in str(error)


def test_sixty_four_character_session_id_is_fine() -> None:
    check_send_turn(_send(session_id="x" * 64), 1000)


@pytest.mark.parametrize("key", [f"{CANARY}.k", f"{CANARY}*", CANARY * 7])
def test_bad_idempotency_key(key: str) -> None:
    error = _rejected(_send(idempotency_key=key))
    assert error.reason == "INVALID_IDEMPOTENCY_KEY"
    assert "idempotency_key" in str(error)
    assert CANARY not in str(error)


def test_too_many_metadata_entries() -> None:
    metadata = {f"{CANARY}-{i}": f"{CANARY}-value" for i in range(MAX_METADATA_ENTRIES + 1)}
    error = _rejected(_send(metadata=metadata))
    assert error.reason == "METADATA_TOO_LARGE"
    assert "metadata" in str(error)
    assert CANARY not in str(error)


def test_max_metadata_entries_is_fine() -> None:
    check_metadata({f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES)}, "metadata")


@pytest.mark.parametrize(
    "metadata",
    [{"": CANARY}, {CANARY + "k" * 200: "v"}, {"k": CANARY + "v" * 1100}],
)
def test_bad_metadata_sizes(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_metadata(metadata, "labels")
    assert info.value.reason == "BAD_METADATA"
    assert "labels" in str(info.value)
    assert CANARY not in str(info.value)


def test_session_id_is_checked_before_text() -> None:
    error = _rejected(_send(session_id="a.b", text=""))
    assert error.reason == "INVALID_SESSION_ID"


def test_create_session_checks() -> None:
    check_create_session(cs_pb2.CreateSessionRequest())  # server-chosen id
    with pytest.raises(InvalidArgument) as info:
        check_create_session(cs_pb2.CreateSessionRequest(session_id=f"{CANARY}.x"))
    assert info.value.reason == "INVALID_SESSION_ID"
    assert CANARY not in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        check_create_session(cs_pb2.CreateSessionRequest(system_prompt=CANARY + "p" * (64 * 1024)))
    assert info.value.reason == "SYSTEM_PROMPT_TOO_LARGE"
    assert CANARY not in str(info.value)


def test_page_size() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(10) == 10
    assert page_size(500) == 500
    with pytest.raises(InvalidArgument) as info:
        page_size(501)
    assert info.value.reason == "PAGE_SIZE_TOO_LARGE"
