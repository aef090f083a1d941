"""Control messages (the gateway asks a session's host to cancel a turn): a typed shape on both sides, and
clear error replies for anything malformed or unknown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from unit_support import FakePuller, FakeSender, ProbedJournal, make_session, turn_msg, wait_for

from salon.actors.control import CancelTurn, ControlError, ControlReply, parse_request
from salon.actors.host import HostSettings, SessionHost
from salon.actors.model import ModelChunk, ModelRequest, ModelResult, TextDelta
from salon.storage.inmemory import InMemorySessionRegistry

TENANT = "acme"
CANCEL = CancelTurn(TENANT, "s1", "t1", incarnation="1700000000000000000", reason="cancelled by the client")


def test_a_cancel_request_travels_as_the_json_the_gateway_has_always_sent() -> None:
    legacy = {
        "action": "cancel",
        "tenant_id": TENANT,
        "session_id": "s1",
        "turn_id": "t1",
        "incarnation": "1700000000000000000",
        "reason": "cancelled by the client",
    }
    assert CANCEL.to_bytes() == json.dumps(legacy).encode()
    assert parse_request(json.dumps(legacy).encode()) == CANCEL
    assert CancelTurn.from_bytes(CANCEL.to_bytes()) == CANCEL
    # Optional fields may be left out; unknown ones (a newer gateway's) are ignored.
    minimal = {"action": "cancel", "tenant_id": TENANT, "session_id": "s1", "turn_id": "t1", "extra": [1]}
    assert parse_request(json.dumps(minimal).encode()) == CancelTurn(TENANT, "s1", "t1")


def test_replies_round_trip_and_stay_as_small_as_before() -> None:
    assert ControlReply("cancelled").to_bytes() == b'{"result": "cancelled"}'
    reply = ControlReply("error", "CONTROL_MALFORMED", "the control message is not JSON")
    assert ControlReply.from_bytes(reply.to_bytes()) == reply
    with pytest.raises(ControlError):
        ControlReply.from_bytes(b'{"result": "maybe"}')


SECRET = "s3cr3t-payload"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json " + SECRET.encode(), "CONTROL_MALFORMED"),
        (b"\xff\xfe", "CONTROL_MALFORMED"),
        (json.dumps([SECRET]).encode(), "CONTROL_MALFORMED"),
        (json.dumps({"action": "cancel", "tenant_id": TENANT, "session_id": "s1"}).encode(), "CONTROL_MALFORMED"),
        (
            json.dumps({"action": "cancel", "tenant_id": TENANT, "session_id": "s1", "turn_id": ""}).encode(),
            "CONTROL_MALFORMED",
        ),
        (
            json.dumps({"action": "cancel", "tenant_id": TENANT, "session_id": 7, "turn_id": "t"}).encode(),
            "CONTROL_MALFORMED",
        ),
        (
            json.dumps(
                {"action": "cancel", "tenant_id": TENANT, "session_id": "s", "turn_id": "t", "reason": "x" * 5000}
            ).encode(),
            "CONTROL_MALFORMED",
        ),
        (json.dumps({"action": SECRET, "tenant_id": TENANT}).encode(), "CONTROL_UNSUPPORTED"),
        (json.dumps({"tenant_id": TENANT}).encode(), "CONTROL_UNSUPPORTED"),
    ],
)
def test_malformed_or_unknown_requests_are_refused_with_a_stable_reason_and_no_echo(data: bytes, reason: str) -> None:
    with pytest.raises(ControlError) as caught:
        parse_request(data)
    assert caught.value.reason == reason
    assert SECRET not in caught.value.message and "xxxx" not in caught.value.message
    reply = ControlReply.refusal(caught.value)
    assert reply.result == ("unsupported" if reason == "CONTROL_UNSUPPORTED" else "error")
    assert SECRET.encode() not in reply.to_bytes()


class HeldProvider:
    """Answers with one token, then waits until cancelled."""

    name = "held"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield TextDelta("first ")
        await asyncio.Event().wait()
        yield ModelResult()

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_the_host_answers_control_bytes_and_never_raises() -> None:
    registry = InMemorySessionRegistry()
    session = make_session("s1")
    await registry.create(TENANT, session)
    sender, puller = FakeSender(), FakePuller()
    host = SessionHost(
        name="host-test",
        pullers=[puller],
        events=sender,
        registry=registry,
        journal=ProbedJournal(),
        provider=HeldProvider(),
        settings=HostSettings(fetch_timeout_s=0.05),
    )
    await host.start()
    try:
        msg = turn_msg(TENANT, "s1", "t1", "hello")
        puller.put(msg)
        await wait_for(lambda: any(e.HasField("delta") for e in sender.log.of("t1")), what="the first token")

        async def ask(data: bytes) -> dict[str, str]:
            reply: dict[str, str] = json.loads(await host.control_message(data, puller.shard))
            return reply

        assert await ask(b"{") == {
            "result": "error",
            "reason": "CONTROL_MALFORMED",
            "message": "the control message is not JSON",
        }
        assert (await ask(b'{"action": "pause"}'))["result"] == "unsupported"
        assert await ask(CancelTurn(TENANT, "nope", "t1").to_bytes()) == {"result": "unknown_session"}
        assert await ask(CancelTurn(TENANT, "s1", "t9").to_bytes()) == {"result": "pending"}
        assert await ask(CancelTurn(TENANT, "s1", "t1", reason="enough").to_bytes()) == {"result": "cancelled"}
        await wait_for(lambda: msg.acked, what="the cancelled turn's ack")
        assert sender.log.of("t1")[-1].cancelled.reason == "enough"
        assert await ask(CancelTurn(TENANT, "s1", "t1").to_bytes()) == {"result": "finished"}
    finally:
        await host.close()
