"""Bad input gets a clear status and a reason, never an echo of the input, and never crashes the engine."""

from __future__ import annotations

import grpc
import pytest
from conftest import collect_turn, create_session

from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

CANARY = "zebra-canary-7781"


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get("salon-error-reason", ""))


async def _send_error(stub: cs_grpc.ConversationServiceStub, **fields: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect_turn(stub, **fields)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "EMPTY_TEXT"), ("   \n\t", "EMPTY_TEXT"), (CANARY + "é" * 20000, "TEXT_TOO_LARGE")],
)
async def test_bad_text_is_invalid_argument_without_echo(
    stub: cs_grpc.ConversationServiceStub, text: str, reason: str
) -> None:
    session_id = await create_session(stub)
    error = await _send_error(stub, session_id=session_id, text=text)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == reason
    assert CANARY not in (error.details() or "")


@pytest.mark.parametrize("bad_id", ["", "has.dot", "*", f"{CANARY}/x", "x" * 65, "sp ace"])
async def test_bad_session_id_is_invalid_argument_without_echo(
    stub: cs_grpc.ConversationServiceStub, bad_id: str
) -> None:
    error = await _send_error(stub, session_id=bad_id, text="hello")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "INVALID_SESSION_ID"
    assert bad_id not in (error.details() or "") or bad_id == ""
    for call in (
        stub.GetSession(cs_pb2.GetSessionRequest(session_id=bad_id)),
        stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=bad_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_idempotency_key_is_invalid_argument(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)
    error = await _send_error(stub, session_id=session_id, text="hi", idempotency_key=f"{CANARY}.x")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "INVALID_IDEMPOTENCY_KEY"
    assert CANARY not in (error.details() or "")


async def test_unknown_session_is_not_found(stub: cs_grpc.ConversationServiceStub) -> None:
    error = await _send_error(stub, session_id="no-such-session", text="hello")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetSession(cs_pb2.GetSessionRequest(session_id="no-such-session"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == error.details()


async def test_taken_session_id_is_already_exists(stub: cs_grpc.ConversationServiceStub) -> None:
    await create_session(stub, session_id="taken-id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(stub, session_id="taken-id")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_bad_session_settings_are_rejected(stub: cs_grpc.ConversationServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(stub, metadata={f"k{i}": "v" for i in range(40)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListSessions(cs_pb2.ListSessionsRequest(page_token=CANARY))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert CANARY not in (info.value.details() or "")


async def test_cancel_and_resume_check_their_ids(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)
    bad = f"{CANARY}.x"
    calls = [
        stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=bad)),
        stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=bad, turn_id="t")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert CANARY not in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.ResumeTurn(cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=bad)):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.ResumeTurn(cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id="never-sent")):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id="no-such-session", turn_id="t"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_engine_still_serves_after_bad_input(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)
    for text in ("", "x" * 40000):
        with pytest.raises(grpc.aio.AioRpcError):
            await collect_turn(stub, session_id, text)
    events = await collect_turn(stub, session_id, "still here")
    assert events[-1].HasField("completed")
