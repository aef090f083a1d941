"""Per-tenant limits on a real engine: each one is hit (RESOURCE_EXHAUSTED, its name as reason, a retry hint
where waiting helps) and reset by moving the limiter's clock, never by sleeping; usage through the admin RPC
and `salon usage`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sec_support import TenantsFile, bearer, engine_config

from salon.actors.usage import total_tokens
from salon.engine import Engine
from salon.storage import Names
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.usage import KvTokenCounters
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

LIMITS = {
    "rate": {"turns_per_minute": 2},
    "conc": {"concurrent_turns": 1},
    "tokens": {"tokens_per_day": 1},
    "size": {"max_message_bytes": 10},
    "few": {"max_sessions": 2},
    "shared": {"tokens_per_day": 1},
    "conc2": {"concurrent_turns": 1},
    "rate2": {"turns_per_minute": 2},
    "busy": {},
}


@pytest.fixture(scope="module")
async def setup(
    nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Engine, TenantsFile]]:
    tenants = TenantsFile(tmp_path_factory.mktemp("limits") / "tenants.toml", limits=LIMITS)
    for tenant in LIMITS:
        tenants.add_key(tenant)
    tenants.add_key("ops", admin=True)
    config = engine_config(
        nats_url,
        tmp_path_factory.mktemp("limits-data"),
        tenants_file=str(tenants.path),
        scripted_tokens=3,
        scripted_token_delay_s=0.4,  # a turn streams for about a second: long enough to overlap another call
    )
    async with Engine(config) as engine:
        yield engine, tenants


def _md(tenants: TenantsFile, tenant: str) -> Any:
    return bearer(tenants.keys[tenant][0])


async def _session(stub: cs_grpc.ConversationServiceStub, md: Any) -> str:
    return str((await stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=md)).session.session_id)


async def _start(stub: cs_grpc.ConversationServiceStub, md: Any, session_id: str, text: str = "hi") -> Any:
    """A turn's call once its first event (accepted) arrived."""
    call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text=text), metadata=md)
    first = await call.read()
    assert first.event.HasField("accepted")
    return call


async def _refused(stub: cs_grpc.ConversationServiceStub, md: Any, session_id: str, text: str = "hi") -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text=text), metadata=md)
        await call.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return dict(info.value.trailing_metadata() or ())


async def test_turns_per_minute(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "rate")
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session = await _session(stub, md)
        for _ in range(2):
            (await _start(stub, md, session)).cancel()
        trailers = await _refused(stub, md, session)
        assert trailers["salon-error-reason"] == "TURNS_PER_MINUTE"
        assert 0 < int(trailers["salon-retry-after-ms"]) <= 60_000
        other = _md(tenants, "conc")
        (await _start(stub, other, await _session(stub, other))).cancel()  # other tenants are not affected
        assert engine.limiter is not None
        real = engine.limiter.wall
        engine.limiter.wall = lambda: real() + 61.0
        (await _start(stub, md, session)).cancel()


async def test_concurrent_turns(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "conc")
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        one, two = await _session(stub, md), await _session(stub, md)
        running = await _start(stub, md, one)
        trailers = await _refused(stub, md, two)
        assert trailers["salon-error-reason"] == "CONCURRENT_TURNS" and int(trailers["salon-retry-after-ms"]) > 0
        rest = []
        while (response := await running.read()) is not grpc.aio.EOF:
            rest.append(response.event)
        assert rest[-1].HasField("completed")
        events = [r.event async for r in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=two, text="hi"), metadata=md)]
        assert events[-1].HasField("completed"), "the place is free once the first turn's stream ended"


async def test_tokens_per_day(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "tokens")
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session = await _session(stub, md)
        request = cs_pb2.SendTurnRequest(session_id=session, text="count me")
        events = [r.event async for r in stub.SendTurn(request, metadata=md)]
        assert any(e.HasField("usage") for e in events)
        usage = await admin_grpc.AdminServiceStub(channel).GetUsage(admin_pb2.GetUsageRequest(), metadata=md)
        assert usage.usage[0].tenant_id == "tokens" and usage.usage[0].tokens_today > 1
        trailers = await _refused(stub, md, session)
        assert trailers["salon-error-reason"] == "TOKENS_PER_DAY"
        assert 0 < int(trailers["salon-retry-after-ms"]) <= 86_400_000
        assert engine.limiter is not None
        real = engine.limiter.wall
        engine.limiter.wall = lambda: real() + 86_400.0
        (await _start(stub, md, session)).cancel()


async def test_message_size(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "size")
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session = await _session(stub, md)
        trailers = await _refused(stub, md, session, text="x" * 11)
        assert trailers["salon-error-reason"] == "MESSAGE_TOO_LARGE" and "salon-retry-after-ms" not in trailers
        (await _start(stub, md, session, text="x" * 10)).cancel()


async def test_max_sessions(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "few")
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        first = await _session(stub, md)
        await _session(stub, md)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _session(stub, md)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(info.value.trailing_metadata() or ())["salon-error-reason"] == "MAX_SESSIONS"
        await stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=first), metadata=md)
        await _session(stub, md)


async def test_salon_usage_shows_each_tenant_against_its_limits(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    env_key = tenants.keys["ops"][0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "usage",
        "--target",
        engine.target,
        "--all",
        "--json",
        env={"SALON_API_KEY": env_key, "PATH": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    rows = {row["tenant_id"]: row for row in json.loads(out)}
    assert set(LIMITS) | {"ops"} <= set(rows)
    assert rows["few"]["sessions"] == 2 and rows["few"]["limits"]["max_sessions"] == 2
    assert rows["tokens"]["limits"]["tokens_per_day"] == 1 and rows["conc"]["limits"]["concurrent_turns"] == 1
    assert rows["rate"]["limits"]["turns_per_minute"] == 2

    # Without an admin key a tenant sees only itself, and never another tenant.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "usage",
        "--target",
        engine.target,
        "--tenant",
        "ops",
        "--api-key",
        tenants.keys["few"][0],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"PERMISSION_DENIED" in err


async def test_the_token_budget_holds_across_gateways(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "shared")
    async with Engine(engine.config.replace(gateway_only=True)) as second:
        assert engine.limiter is not None and second.limiter is not None
        second.limiter.wall = engine.limiter.wall  # the same day on both (another test moves the first's clock)
        async with (
            grpc.aio.insecure_channel(engine.target) as first_channel,
            grpc.aio.insecure_channel(second.target) as second_channel,
        ):
            first = cs_grpc.ConversationServiceStub(first_channel)
            session = await _session(first, md)
            request = cs_pb2.SendTurnRequest(session_id=session, text="spend")
            events = [r.event async for r in first.SendTurn(request, metadata=md)]
            assert any(e.HasField("usage") for e in events)
            # Tokens are recorded at a short interval, not on the turn's path: record them now.
            assert await engine.limiter.flush()
            trailers = await _refused(cs_grpc.ConversationServiceStub(second_channel), md, session)
            assert trailers["salon-error-reason"] == "TOKENS_PER_DAY", "the other gateway knows the tokens spent"
            usage = await admin_grpc.AdminServiceStub(second_channel).GetUsage(admin_pb2.GetUsageRequest(), metadata=md)
            assert usage.usage[0].tokens_today > 1


@contextlib.asynccontextmanager
async def _second_gateway(engine: Engine) -> AsyncIterator[Engine]:
    """Another gateway of the same deployment (same NATS, namespace and Ray), on the same day and minute."""
    async with Engine(engine.config.replace(gateway_only=True)) as second:
        assert engine.limiter is not None and second.limiter is not None
        second.limiter.wall = engine.limiter.wall  # (another test moves the first's clock)
        yield second


async def test_concurrent_turns_hold_across_gateways(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "conc2")
    async with (
        _second_gateway(engine) as second,
        grpc.aio.insecure_channel(engine.target) as first_channel,
        grpc.aio.insecure_channel(second.target) as second_channel,
    ):
        first, other = cs_grpc.ConversationServiceStub(first_channel), cs_grpc.ConversationServiceStub(second_channel)
        one, two = await _session(first, md), await _session(first, md)
        running = await _start(first, md, one)
        trailers = await _refused(other, md, two)
        assert trailers["salon-error-reason"] == "CONCURRENT_TURNS", "the other gateway sees the running turn"
        assert int(trailers["salon-retry-after-ms"]) > 0
        while await running.read() is not grpc.aio.EOF:
            pass
        events = [r.event async for r in other.SendTurn(cs_pb2.SendTurnRequest(session_id=two, text="hi"), metadata=md)]
        assert events[-1].HasField("completed"), "the place is free on every gateway once the turn's stream ended"


async def test_turns_per_minute_hold_across_gateways(setup: tuple[Engine, TenantsFile]) -> None:
    engine, tenants = setup
    md = _md(tenants, "rate2")
    async with (
        _second_gateway(engine) as second,
        grpc.aio.insecure_channel(engine.target) as first_channel,
        grpc.aio.insecure_channel(second.target) as second_channel,
    ):
        first, other = cs_grpc.ConversationServiceStub(first_channel), cs_grpc.ConversationServiceStub(second_channel)
        session = await _session(first, md)
        (await _start(first, md, session)).cancel()
        (await _start(other, md, session)).cancel()
        for stub in (first, other):
            trailers = await _refused(stub, md, session)
            assert trailers["salon-error-reason"] == "TURNS_PER_MINUTE"
            assert 0 < int(trailers["salon-retry-after-ms"]) <= 60_000
        usage = await admin_grpc.AdminServiceStub(second_channel).GetUsage(admin_pb2.GetUsageRequest(), metadata=md)
        assert usage.usage[0].turns_last_minute == 2, "either gateway reports the tenant's turns on both"


async def test_tokens_of_many_concurrent_turns_are_counted_exactly(
    setup: tuple[Engine, TenantsFile], nats_url: str
) -> None:
    # Many turns of one tenant end at once on two gateways: every token is counted, none twice.
    engine, tenants = setup
    md = _md(tenants, "busy")
    async with (
        _second_gateway(engine) as second,
        grpc.aio.insecure_channel(engine.target) as first_channel,
        grpc.aio.insecure_channel(second.target) as second_channel,
    ):
        stubs = [cs_grpc.ConversationServiceStub(first_channel), cs_grpc.ConversationServiceStub(second_channel)]
        sessions = [await _session(stubs[0], md) for _ in range(24)]

        async def turn(n: int, session: str) -> int:
            request = cs_pb2.SendTurnRequest(session_id=session, text=f"turn {n}")
            events = [r.event async for r in stubs[n % 2].SendTurn(request, metadata=md)]
            assert events[-1].HasField("completed")
            return sum(total_tokens(e.usage) for e in events if e.HasField("usage"))

        spent = sum(await asyncio.gather(*(turn(n, s) for n, s in enumerate(sessions))))
        assert spent > 0
        assert engine.limiter is not None and second.limiter is not None
        day = int(engine.limiter.wall() // 86400)
        assert await engine.limiter.flush() and await second.limiter.flush()
    nc = await connect(nats_url, name="salon-test-usage")
    try:
        counters = await KvTokenCounters.open(nc.jetstream(), Names(engine.config.namespace))
        assert await counters.get("busy", day) == spent
    finally:
        await close_connection(nc)
