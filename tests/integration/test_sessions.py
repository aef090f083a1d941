"""Session management over gRPC: create, get, list with paging and filters, delete; health and reflection."""

from __future__ import annotations

import grpc
import pytest
from conftest import collect_turn, create_session
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from salon.engine import Engine
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2


async def test_create_get_keeps_what_the_caller_set(stub: cs_grpc.ConversationServiceStub) -> None:
    created = await stub.CreateSession(
        cs_pb2.CreateSessionRequest(
            session_id="chosen-1",
            metadata={"user": "42"},
            system_prompt="You are terse.",
            memory=session_pb2.MemorySettings(window_max_messages=10),
            double_texting=session_pb2.DOUBLE_TEXTING_POLICY_REJECT,
        )
    )
    got = (await stub.GetSession(cs_pb2.GetSessionRequest(session_id="chosen-1"))).session
    assert got.session_id == "chosen-1"
    assert dict(got.metadata) == {"user": "42"}
    assert got.system_prompt == "You are terse."
    assert got.memory.window_max_messages == 10
    assert got.double_texting == session_pb2.DOUBLE_TEXTING_POLICY_REJECT
    assert got.create_time == created.session.create_time
    generated = await create_session(stub)
    assert len(generated) == 36 and generated[14] == "7", "server-named sessions get a UUIDv7"


async def test_list_pages_through_and_filters_by_metadata(make_engine: object) -> None:
    engine: Engine = await make_engine()  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        ids = [await create_session(stub, metadata={"team": "red" if i % 2 else "blue"}) for i in range(7)]
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await stub.ListSessions(cs_pb2.ListSessionsRequest(page_size=3, page_token=token))
            seen += [s.session_id for s in page.sessions]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
        assert pages == 3
        red = await stub.ListSessions(cs_pb2.ListSessionsRequest(metadata_filter={"team": "red"}))
        assert sorted(s.session_id for s in red.sessions) == sorted(ids[1::2])


async def test_delete_forgets_the_session_and_a_recreated_id_starts_fresh(
    stub: cs_grpc.ConversationServiceStub,
) -> None:
    session_id = await create_session(stub, session_id="reborn")
    await collect_turn(stub, session_id, "remember me")
    await stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=session_id))
    for call in (
        stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id)),
        stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=session_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect_turn(stub, session_id, "hello?")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    await create_session(stub, session_id="reborn")
    events = await collect_turn(stub, session_id, "first again")
    assert events[-1].HasField("completed")
    got = (await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))).session
    assert got.turn_count == 1, "a re-created session must not inherit the deleted one's memory"


async def test_health_and_reflection_are_served(shared_engine: Engine) -> None:
    async with grpc.aio.insecure_channel(shared_engine.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "salon.v1.ConversationService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> object:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = [s.name async for r in reflect.ServerReflectionInfo(ask()) for s in r.list_services_response.service]
    assert "salon.v1.ConversationService" in services
    assert "grpc.health.v1.Health" in services
