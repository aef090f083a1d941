"""Oversized requests are parsed and refused by Salon, with a reason: a message of several megabytes, or
megabytes of call metadata. Only absurdly large ones meet gRPC's own transport limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import collect_turn, create_session

from salon.engine import Engine
from salon.engine.transport import transport_limits
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

MB = 1_000_000


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get("salon-error-reason", ""))


async def test_a_5_mb_message_is_refused_by_salon_with_a_reason(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect_turn(stub, session_id, "x" * (5 * MB))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == "TEXT_TOO_LARGE"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateSession(cs_pb2.CreateSessionRequest(metadata={"k": "v" * (5 * MB)}))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == "BAD_METADATA"
    assert (await collect_turn(stub, session_id, "still serving"))[-1].HasField("completed")


async def test_10_mb_of_call_metadata_is_refused_by_salon_with_a_reason(
    stub: cs_grpc.ConversationServiceStub,
) -> None:
    padding = (("x-padding", "p" * (10 * MB)),)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=padding)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == "CALL_METADATA_TOO_LARGE"
    assert "p" * 100 not in (info.value.details() or ""), "no echo of the input"

    session_id = await create_session(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="hello"), metadata=padding)
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == "CALL_METADATA_TOO_LARGE"


async def test_a_converse_stream_with_10_mb_of_metadata_is_refused_with_a_reason(
    stub: cs_grpc.ConversationServiceStub,
) -> None:
    async def requests() -> AsyncIterator[cs_pb2.ConverseRequest]:
        # No request message: the interceptor answers at call start, and a client write racing that answer makes
        # grpc.aio report INTERNAL instead of the server's status (grpc/grpc#36066).
        return
        yield

    call = stub.Converse(requests(), metadata=(("x-padding", "p" * (10 * MB)),))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == "CALL_METADATA_TOO_LARGE"


async def test_only_requests_over_the_transport_limits_get_grpcs_own_answer(
    shared_engine: Engine, stub: cs_grpc.ConversationServiceStub
) -> None:
    message_limit, metadata_limit = transport_limits(shared_engine.config)
    session_id = await create_session(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect_turn(stub, session_id, "x" * (message_limit + 1))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=(("x-padding", "p" * metadata_limit),))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await collect_turn(stub, session_id, "still serving"))[-1].HasField("completed")
