"""Authentication against a real engine: API keys (missing, malformed, unknown, revoked, rotated while it
runs), mutual TLS with a CA made here, and health open to all."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import collect_turn, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sec_support import Pki, TenantsFile, bearer, engine_config, tls_channel

from salon.engine import Engine
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

UNAUTHENTICATED_MESSAGE = "missing or invalid credentials"


@pytest.fixture(scope="module")
async def tenants(tmp_path_factory: pytest.TempPathFactory) -> TenantsFile:
    file = TenantsFile(tmp_path_factory.mktemp("tenants") / "tenants.toml")
    file.add_key("acme")
    file.add_key("beta")
    return file


@pytest.fixture(scope="module")
async def engine(
    nats_url: str, ray_session: None, tenants: TenantsFile, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    async with Engine(
        engine_config(nats_url, tmp_path_factory.mktemp("auth"), tenants_file=str(tenants.path))
    ) as running:
        yield running


def every_call(stub: cs_grpc.ConversationServiceStub, admin: admin_grpc.AdminServiceStub) -> dict[str, Any]:
    """One call of every RPC (unary ones as awaitables, streams as calls to read from)."""
    session = "s-1"
    return {
        "CreateSession": lambda md: stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=md),
        "GetSession": lambda md: stub.GetSession(cs_pb2.GetSessionRequest(session_id=session), metadata=md),
        "ListSessions": lambda md: stub.ListSessions(cs_pb2.ListSessionsRequest(), metadata=md),
        "DeleteSession": lambda md: stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=session), metadata=md),
        "CancelTurn": lambda md: stub.CancelTurn(
            cs_pb2.CancelTurnRequest(session_id=session, turn_id="t"), metadata=md
        ),
        "GetHistory": lambda md: stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session), metadata=md),
        "GetUsage": lambda md: admin.GetUsage(admin_pb2.GetUsageRequest(), metadata=md),
        "EraseUser": lambda md: admin.EraseUser(admin_pb2.EraseUserRequest(user_id="u1"), metadata=md),
        "SendTurn": lambda md: _drain(
            stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session, text="hi"), metadata=md)
        ),
        "ResumeTurn": lambda md: _drain(
            stub.ResumeTurn(cs_pb2.ResumeTurnRequest(session_id=session, turn_id="t"), metadata=md)
        ),
        # No request message: the interceptor answers at call start, and a client write racing that answer
        # makes grpc.aio report INTERNAL instead of the server's status (grpc/grpc#36066).
        "Converse": lambda md: _drain(stub.Converse(_no_requests(), metadata=md)),
    }


async def _no_requests() -> AsyncIterator[Any]:
    return
    yield  # an async generator that sends nothing


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


BAD_CREDENTIALS = {
    "missing": (),
    "empty bearer": (("authorization", "Bearer "),),
    "other scheme": (("authorization", "Basic dXNlcjpwYXNz"),),
    "garbage": (("authorization", "Bearer not-a-key"),),
    "unknown key": bearer("salon_0123456789ab_" + "x" * 43),
}


async def test_calls_without_valid_credentials_are_unauthenticated_on_every_rpc(engine: Engine) -> None:
    async with grpc.aio.insecure_channel(engine.target) as channel:
        calls = every_call(cs_grpc.ConversationServiceStub(channel), admin_grpc.AdminServiceStub(channel))
        for what, metadata in BAD_CREDENTIALS.items():
            for rpc, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (what, rpc)
                assert info.value.details() == UNAUTHENTICATED_MESSAGE, (what, rpc)
                assert dict(info.value.trailing_metadata() or ())["salon-error-reason"] == "UNAUTHENTICATED"


async def test_health_answers_without_credentials(engine: Engine) -> None:
    async with grpc.aio.insecure_channel(engine.target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_valid_key_works_and_a_rotated_key_takes_over_while_the_engine_runs(
    engine: Engine, tenants: TenantsFile
) -> None:
    old = tenants.keys["acme"][0]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        created = await stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=bearer(old))
        session_id = created.session.session_id
        request = cs_pb2.SendTurnRequest(session_id=session_id, text="hello")
        events = [r.event async for r in stub.SendTurn(request, metadata=bearer(old))]
        assert events[-1].HasField("completed")

        new = tenants.add_key("acme")
        tenants.revoke("acme", old)

        async def rotated() -> bool:
            try:
                await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id), metadata=bearer(old))
            except grpc.aio.AioRpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        await wait_for(rotated, timeout_s=20, what="the revoked key to be refused")
        got = await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id), metadata=bearer(new))
        assert got.session.session_id == session_id, "the new key reaches the same tenant's sessions"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListSessions(cs_pb2.ListSessionsRequest(), metadata=bearer(old))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == UNAUTHENTICATED_MESSAGE, "revoked answers like unknown"


async def test_mutual_tls_takes_the_tenant_from_the_client_certificate(
    nats_url: str, ray_session: None, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    tenants = TenantsFile(tmp_path / "tenants.toml")
    acme_key = tenants.add_key("acme")
    tenants.listed.add("certonly")
    tenants.write()
    config = engine_config(nats_url, tmp_path / "data", tenants_file=str(tenants.path), **pki.server_settings())
    async with Engine(config) as engine:
        target = f"localhost:{engine.grpc_port}"
        acme_cert = pki.issue("ignored-cn", uri="salon://tenant/acme")
        async with tls_channel(target, pki.ca_pem, *acme_cert) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            created = await stub.CreateSession(cs_pb2.CreateSessionRequest(session_id="from-cert"))
            assert created.session.session_id == "from-cert"
            events = await collect_turn(stub, "from-cert", "over mTLS")
            assert events[-1].HasField("completed")
        # A certificate naming its tenant by common name only: another tenant, acme's session is not there ...
        async with tls_channel(target, pki.ca_pem, *pki.issue("certonly")) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            page = await stub.ListSessions(cs_pb2.ListSessionsRequest())
            assert list(page.sessions) == []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetSession(cs_pb2.GetSessionRequest(session_id="from-cert"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # ... while an API key on the call decides the tenant.
            got = await stub.GetSession(cs_pb2.GetSessionRequest(session_id="from-cert"), metadata=bearer(acme_key))
            assert got.session.session_id == "from-cert"
        # No client certificate: no connection.
        async with tls_channel(target, pki.ca_pem) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cs_grpc.ConversationServiceStub(channel).ListSessions(
                    cs_pb2.ListSessionsRequest(), metadata=bearer(acme_key), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # A valid certificate for a tenant the file does not list.
        async with tls_channel(target, pki.ca_pem, *pki.issue("x", uri="salon://tenant/stranger")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cs_grpc.ConversationServiceStub(channel).ListSessions(cs_pb2.ListSessionsRequest())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A certificate from another CA never gets a connection.
        rogue = Pki(tmp_path / "rogue")
        async with tls_channel(target, pki.ca_pem, *rogue.issue("x", uri="salon://tenant/acme")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cs_grpc.ConversationServiceStub(channel).ListSessions(cs_pb2.ListSessionsRequest(), timeout=5)
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
        # Plaintext cannot talk to the TLS port.
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cs_grpc.ConversationServiceStub(channel).ListSessions(
                    cs_pb2.ListSessionsRequest(), metadata=bearer(acme_key), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_python_clients_send_their_api_key(engine: Engine, tenants: TenantsFile) -> None:
    from salon.client import SalonClient, SalonError
    from salon.client.sync import SalonClient as SyncClient

    key = tenants.add_key("beta")
    async with SalonClient(engine.target, api_key=key, timeout_s=10) as client:

        async def key_taken_up() -> bool:
            try:
                await client.get_usage()
            except SalonError as exc:
                assert exc.code == grpc.StatusCode.UNAUTHENTICATED
                return False
            return True

        await wait_for(key_taken_up, timeout_s=20, what="the new key to be read from the tenants file")
        session = await client.create_session()
        assert [u.tenant_id for u in await client.get_usage()] == ["beta"]
    async with SalonClient(engine.target, timeout_s=10) as anonymous:
        with pytest.raises(SalonError) as info:
            await anonymous.get_session(session.id)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    def blocking() -> str:
        with SyncClient(engine.target, api_key=key, timeout_s=10) as client:
            return client.get_session(session.id).id

    assert await asyncio.to_thread(blocking) == session.id


async def test_reflection_needs_credentials_when_auth_is_on(engine: Engine, tenants: TenantsFile) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async with grpc.aio.insecure_channel(engine.target) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            # No request message, as for Converse above: a client write racing the interceptor's answer makes
            # grpc.aio report INTERNAL instead of the server's status (grpc/grpc#36066).
            await _drain(reflect.ServerReflectionInfo(_no_requests()))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = [r async for r in reflect.ServerReflectionInfo(ask(), metadata=bearer(tenants.keys["beta"][0]))]
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {"salon.v1.ConversationService", "salon.v1.AdminService"} <= names


async def test_salon_serve_refuses_auth_off_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"loopback" in err and b"auth" in err
    assert not (tmp_path / "nats").exists(), "nothing was started"
