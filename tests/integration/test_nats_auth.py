"""The internal surface: the embedded nats-server takes no anonymous connection, keeps its credentials private,
and a tenant's event reader can read its own tenant's events only: not another tenant's, not the turns, and it
can publish nothing."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from conftest import EngineFactory, wait_for
from sec_support import TenantsFile, bearer

from salon.engine.nats_server import EmbeddedNats, tenant_user
from salon.storage import Names
from salon.storage.jetstream.events import unpack_events
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2


async def _refused(url: str) -> BaseException:
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)
    except Exception as exc:
        return exc
    await nc.close()
    pytest.fail("the connection was accepted")


class Reader:
    """A NATS connection that records what it receives and the server's permission errors."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.received: list[str] = []
        self.events = 0
        """Turn events read: the events stream packs several into one message."""
        self.errors: list[str] = []

    async def connect(self, url: str) -> Reader:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=0)
        return self

    async def subscribe(self, subject: str) -> None:
        async def got(msg: Any) -> None:
            self.received.append(msg.subject)
            with contextlib.suppress(Exception):
                self.events += len(unpack_events(msg.data, msg.headers))

        await self.nc.subscribe(subject, cb=got)
        await self.nc.flush()

    def denied(self) -> bool:
        return any("permissions violation" in e for e in self.errors)


async def test_tenant_event_readers_see_their_own_events_only_and_publish_nothing(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    namespace = f"nats{uuid.uuid4().hex[:8]}"
    passwords = {"acme": uuid.uuid4().hex, "beta": uuid.uuid4().hex}
    server = EmbeddedNats(tmp_path / "nats", namespace=namespace, tenant_readers=passwords)
    url = await server.start()
    host = server.address.split("://", 1)[1]
    readers: list[Reader] = []
    engine = None
    try:
        tenants = TenantsFile(tmp_path / "tenants.toml")
        key = tenants.add_key("acme")
        engine = await make_engine(nats_url=url, namespace=namespace, auth="on", tenants_file=str(tenants.path))

        # No credentials, a wrong password, another tenant's user with the wrong password: refused outright.
        for bad in (
            server.address,
            f"nats://salon-engine:wrong@{host}",
            f"nats://tenant-acme:{passwords['beta']}@{host}",
        ):
            assert "authorization" in str(await _refused(bad)).lower()

        names = Names(namespace)
        own = await Reader().connect(f"nats://{tenant_user('acme')}:{passwords['acme']}@{host}")
        other = await Reader().connect(f"nats://{tenant_user('beta')}:{passwords['beta']}@{host}")
        readers += [own, other]
        await own.subscribe(f"{namespace}.events.acme.>")
        await other.subscribe(f"{namespace}.events.acme.>")
        await other.subscribe(f"{namespace}.events.>")
        await other.subscribe(names.turns_wildcard)
        await wait_for(lambda: _true(other.denied()), timeout_s=10, what="the server to refuse beta's subscriptions")

        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            created = await stub.CreateSession(cs_pb2.CreateSessionRequest(), metadata=bearer(key))
            request = cs_pb2.SendTurnRequest(session_id=created.session.session_id, text="private")
            events = [r.event async for r in stub.SendTurn(request, metadata=bearer(key))]
        assert events[-1].HasField("completed")
        await wait_for(lambda: _true(own.events >= len(events)), timeout_s=10, what="acme's reader")
        await other.nc.flush()
        assert other.received == [], "beta read nothing of acme's"

        # Beta can publish nothing: not a turn, not a JetStream API request.
        js = engine._nc.jetstream()
        # The stream's last sequence, not its message count: the engine's own turn is removed once acknowledged.
        before = (await js.stream_info(names.turns_stream)).state.last_seq
        other.errors.clear()
        turn = cs_pb2.SendTurnRequest(session_id=created.session.session_id, text="injected").SerializeToString()
        await other.nc.publish(names.turn_subject(0), turn, headers={"Salon-Tenant": "acme", "Salon-Turn-Id": "x"})
        await other.nc.publish(f"{namespace}.events.acme.s.t", turn_pb2.TurnEvent(seq=1).SerializeToString())
        await other.nc.flush()
        await wait_for(lambda: _true(other.denied()), timeout_s=10, what="the server to refuse beta's publishes")
        with pytest.raises(Exception):  # noqa: B017 - a permission violation or no responder, never an answer
            await other.nc.request(f"$JS.API.STREAM.INFO.{names.turns_stream}", b"", timeout=2)
        assert (await js.stream_info(names.turns_stream)).state.last_seq == before
    finally:
        for reader in readers:
            with contextlib.suppress(Exception):
                await reader.nc.close()
        if engine is not None:
            await engine.close()  # before its nats-server: closing on a dead one waits out its timeouts
        await server.close()


async def _true(value: bool) -> bool:
    return value


async def test_the_engine_user_is_kept_to_its_namespace_and_its_password_to_its_owner(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(tmp_path / "nats", namespace="mine")
    url = await server.start()
    try:
        credentials = tmp_path / "nats" / "credentials.json"
        config = tmp_path / "nats" / "run" / "nats-server.conf"
        for path in (credentials, config):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert "authorization" in str(await _refused(server.address)).lower()
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
        try:
            await nc.publish("mine.turns.0", b"fine")
            await nc.flush()
            assert errors == []
            await nc.publish("theirs.turns.0", b"not allowed")
            await nc.flush()
            await wait_for(lambda: _true(bool(errors)), timeout_s=10, what="the permission violation")
            assert "permissions violation" in errors[0]
        finally:
            await nc.close()
        # A restarted server takes the same credentials (they are made once).
        address = server.address
        await server.close()
        again = EmbeddedNats(tmp_path / "nats", namespace="mine", port=int(address.rsplit(":", 1)[1]))
        assert await again.start() == url
        await again.close()
    finally:
        await server.close()


async def test_the_engine_logs_no_nats_password(make_engine: EngineFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    engine = await make_engine()
    password = engine.nats_url.split("@")[0].rsplit(":", 1)[-1]
    assert len(password) >= 20
    assert password not in caplog.text
