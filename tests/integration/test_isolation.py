"""Tenant isolation: tenant B probes tenant A's real and made-up session and turn ids through every RPC and gets
exactly the answers a missing session gets, and no data; client-chosen ids live inside each tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sec_support import TenantsFile, bearer, engine_config

from salon.engine import Engine
from salon.storage import uuid7
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

TRACE_A = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00f067aa0ba902b7-01"
TRACE_B = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
async def setup(
    nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Engine, str, str]]:
    tenants = TenantsFile(tmp_path_factory.mktemp("iso") / "tenants.toml")
    a, b = tenants.add_key("acme"), tenants.add_key("beta")
    async with Engine(
        engine_config(nats_url, tmp_path_factory.mktemp("iso-data"), tenants_file=str(tenants.path))
    ) as e:
        yield e, a, b


def _outcome(exc: grpc.aio.AioRpcError) -> tuple[Any, ...]:
    return exc.code(), exc.details(), dict(exc.trailing_metadata() or ()).get("salon-error-reason")


async def _fails(call: Any) -> tuple[Any, ...]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return _outcome(exc)
    pytest.fail("the call succeeded")


async def _stream_fails(call: Any) -> tuple[Any, ...]:
    try:
        items = [item async for item in call]
    except grpc.aio.AioRpcError as exc:
        return _outcome(exc)
    pytest.fail(f"the stream ended without an error after {len(items)} items")


async def _probe(stub: cs_grpc.ConversationServiceStub, md: Any, session_id: str, turn_id: str) -> dict[str, Any]:
    """What tenant B gets for every RPC that names a session (and turn)."""

    async def converse() -> tuple[Any, ...]:
        async def requests() -> AsyncIterator[cs_pb2.ConverseRequest]:
            yield cs_pb2.ConverseRequest(
                request_id="r1", send_turn=cs_pb2.SendTurnRequest(session_id=session_id, text="let me in")
            )
            yield cs_pb2.ConverseRequest(
                request_id="r2", cancel_turn=cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id)
            )
            yield cs_pb2.ConverseRequest(
                request_id="r3", resume_turn=cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=turn_id)
            )

        replies = [r async for r in stub.Converse(requests(), metadata=md)]
        assert all(r.HasField("error") for r in replies), "no events of another tenant's session"
        return tuple(sorted((r.error.request_id, r.error.code, r.error.reason, r.error.message) for r in replies))

    return {
        "GetSession": await _fails(stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id), metadata=md)),
        "GetHistory": await _fails(stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id), metadata=md)),
        "SendTurn": await _stream_fails(
            stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="let me in"), metadata=md)
        ),
        "SendTurn(idempotency_key)": await _stream_fails(
            stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="x", idempotency_key=turn_id), metadata=md)
        ),
        "CancelTurn": await _fails(
            stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id), metadata=md)
        ),
        "ResumeTurn": await _stream_fails(
            stub.ResumeTurn(cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=turn_id), metadata=md)
        ),
        "DeleteSession": await _fails(
            stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=session_id), metadata=md)
        ),
        "Converse": await converse(),
    }


async def test_another_tenants_sessions_answer_exactly_like_missing_ones(setup: tuple[Engine, str, str]) -> None:
    engine, key_a, key_b = setup
    a, b = bearer(key_a), bearer(key_b)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        named = (await stub.CreateSession(cs_pb2.CreateSessionRequest(system_prompt="A's"), metadata=a)).session
        chosen = (
            await stub.CreateSession(
                cs_pb2.CreateSessionRequest(session_id="team-room", system_prompt="A's"), metadata=a
            )
        ).session
        events = [
            r.event
            async for r in stub.SendTurn(
                cs_pb2.SendTurnRequest(session_id=named.session_id, text="secret plans"), metadata=a
            )
        ]
        assert events[-1].HasField("completed")
        turn_a = events[0].turn_id

        missing = await _probe(stub, b, uuid7(), uuid7())
        assert missing["GetSession"][0] == grpc.StatusCode.NOT_FOUND
        for real_session in (named.session_id, chosen.session_id):
            probed = await _probe(stub, b, real_session, turn_a)
            assert probed == missing, f"B learns something about A's session {real_session}"

        # Nothing of A's changed or leaked.
        listed = await stub.ListSessions(cs_pb2.ListSessionsRequest(), metadata=b)
        assert list(listed.sessions) == []
        history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=named.session_id), metadata=a)
        assert len(history.turns) == 1, "B's turns never reached A's session"
        mine = await stub.GetSession(cs_pb2.GetSessionRequest(session_id=chosen.session_id), metadata=a)
        assert mine.session.system_prompt == "A's"


async def test_client_chosen_ids_and_idempotency_keys_live_inside_the_tenant(setup: tuple[Engine, str, str]) -> None:
    engine, key_a, key_b = setup
    a, b = bearer(key_a), bearer(key_b)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        for md, prompt in ((a, "A's room"), (b, "B's room")):
            await stub.CreateSession(
                cs_pb2.CreateSessionRequest(session_id="same-id", system_prompt=prompt), metadata=md
            )
        request = cs_pb2.SendTurnRequest(session_id="same-id", text="hello", idempotency_key="same-key")
        first = [r.event async for r in stub.SendTurn(request, metadata=(*a, ("traceparent", TRACE_A)))]
        second = [r.event async for r in stub.SendTurn(request, metadata=(*b, ("traceparent", TRACE_B)))]
        assert first[-1].HasField("completed") and second[-1].HasField("completed")
        # B's turn ran for B (its own trace), not a replay of A's turn under the same key.
        assert first[0].accepted.trace_id == TRACE_A.split("-")[1]
        assert second[0].accepted.trace_id == TRACE_B.split("-")[1]
        got_a = await stub.GetSession(cs_pb2.GetSessionRequest(session_id="same-id"), metadata=a)
        got_b = await stub.GetSession(cs_pb2.GetSessionRequest(session_id="same-id"), metadata=b)
        assert (got_a.session.system_prompt, got_b.session.system_prompt) == ("A's room", "B's room")
        await stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id="same-id"), metadata=b)
        still = await stub.GetSession(cs_pb2.GetSessionRequest(session_id="same-id"), metadata=a)
        assert still.session.system_prompt == "A's room", "B deleting its session leaves A's alone"


async def test_usage_of_another_tenant_is_denied_alike_for_real_and_unknown_tenants(
    setup: tuple[Engine, str, str],
) -> None:
    engine, _, key_b = setup
    async with grpc.aio.insecure_channel(engine.target) as channel:
        admin = admin_grpc.AdminServiceStub(channel)
        own = await admin.GetUsage(admin_pb2.GetUsageRequest(), metadata=bearer(key_b))
        assert [u.tenant_id for u in own.usage] == ["beta"]
        outcomes = set()
        for tenant in ("acme", "nobody-here"):
            outcomes.add(
                await _fails(admin.GetUsage(admin_pb2.GetUsageRequest(tenant_id=tenant), metadata=bearer(key_b)))
            )
        outcomes.add(await _fails(admin.GetUsage(admin_pb2.GetUsageRequest(all_tenants=True), metadata=bearer(key_b))))
        assert len(outcomes) == 1 and next(iter(outcomes))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_server_ids_are_unguessable() -> None:
    # uuid7: 48 bits of milliseconds, then 74 bits from os.urandom: ids made in the same millisecond differ in
    # those bits, so knowing when a session was made leaves 2**74 candidates.
    ids = {uuid7() for _ in range(2000)}
    assert len(ids) == 2000
    random_parts = {i.replace("-", "")[13:] for i in ids}
    assert len(random_parts) == 2000
