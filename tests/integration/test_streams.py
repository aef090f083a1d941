"""Streams that hold up under real clients: cancel, double texting, resume, disconnects, slow readers,
admission limits and deadlines, each against a real engine."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import (
    assert_well_formed,
    collect_turn,
    create_session,
    engine_config,
    reply_text,
    running_engine,
    wait_for,
)

from salon.engine import Engine
from salon.providers import scripted_reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

ROOT = Path(__file__).resolve().parents[2]
SLOW = {"scripted_tokens": 40, "scripted_token_delay_s": 0.03}


async def _history(stub: cs_grpc.ConversationServiceStub, session_id: str) -> list[turn_pb2.TurnRecord]:
    return list((await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id, page_size=100))).turns)


async def _read_until(call: Any, count: int, sink: list[turn_pb2.TurnEvent]) -> None:
    """Read ``count`` events of a SendTurn/ResumeTurn call into ``sink``."""
    while len(sink) < count:
        response = await call.read()
        assert response is not grpc.aio.EOF, "the stream ended early"
        sink.append(response.event)


async def _rest(call: Any, sink: list[turn_pb2.TurnEvent]) -> None:
    while (response := await call.read()) is not grpc.aio.EOF:
        sink.append(response.event)


async def _model_calls(engine: Engine) -> int:
    return sum(s["model_calls"] for s in await engine.hosts.stats())


@pytest.fixture(scope="module")
async def slow(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """One engine with slow answers for the module: each test works on sessions of its own and waits for its
    turns to end, so none sees another's (an engine start costs seconds: three Ray worker processes)."""
    async with running_engine(engine_config(tmp_path_factory.mktemp("slow"), nats_url, **SLOW)) as engine:
        yield engine


async def test_cancel_mid_stream_stops_records_partial_and_frees_the_session(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="long answer"))
        events: list[turn_pb2.TurnEvent] = []
        await _read_until(call, 5, events)
        await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=events[0].turn_id))
        await _rest(call, events)
        assert_well_formed(events, session_id)
        assert events[-1].HasField("cancelled")
        partial = reply_text(events)
        assert 0 < len(partial) < len("".join(scripted_reply("long answer", 40)))
        after = await collect_turn(stub, session_id, "next")
        assert after[-1].HasField("completed"), "the session is free for its next turn"
        history = await _history(stub, session_id)
    assert (history[0].status, history[0].reply_text) == (turn_pb2.TURN_STATUS_CANCELLED, partial)


async def test_cancel_before_the_first_token(make_engine: Any) -> None:
    engine: Engine = await make_engine(scripted_first_token_delay_s=30.0)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="never answered"))
        events: list[turn_pb2.TurnEvent] = []
        await _read_until(call, 1, events)
        await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=events[0].turn_id))
        await _rest(call, events)
    assert [e.WhichOneof("kind") for e in events] == ["accepted", "cancelled"]


async def test_cancelling_a_queued_turn_never_runs_it(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="first"))
        head: list[turn_pb2.TurnEvent] = []
        await _read_until(first, 2, head)
        calls_before = await _model_calls(slow)
        second = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="second", idempotency_key="q-2"))
        queued: list[turn_pb2.TurnEvent] = []
        await _read_until(second, 1, queued)
        assert queued[0].accepted.queue_position == 1
        await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id="q-2"))
        await _rest(second, queued)
        await _rest(first, head)
    assert [e.WhichOneof("kind") for e in queued] == ["accepted", "cancelled"]
    assert head[-1].HasField("completed")
    assert await _model_calls(slow) == calls_before, "the cancelled turn never reached the model"


@pytest.mark.parametrize(
    ("policy", "first_status", "second_kinds"),
    [
        (session_pb2.DOUBLE_TEXTING_POLICY_INTERRUPT, turn_pb2.TURN_STATUS_CANCELLED, "completed"),
        (session_pb2.DOUBLE_TEXTING_POLICY_ROLLBACK, None, "completed"),
        (session_pb2.DOUBLE_TEXTING_POLICY_ENQUEUE, turn_pb2.TURN_STATUS_COMPLETED, "completed"),
    ],
)
async def test_double_texting_policies(slow: Engine, policy: int, first_status: int | None, second_kinds: str) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub, double_texting=policy)
        first = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="first answer"))
        head: list[turn_pb2.TurnEvent] = []
        await _read_until(first, 4, head)
        second = await collect_turn(stub, session_id, "second")
        await _rest(first, head)
        history = await _history(stub, session_id)
    assert second[-1].WhichOneof("kind") == second_kinds
    assert reply_text(second) == "".join(scripted_reply("second", 40))
    if first_status is None:  # rollback: erased from history
        assert [t.user_text for t in history] == ["second"]
        assert head[-1].HasField("cancelled")
    else:
        assert [t.user_text for t in history] == ["first answer", "second"]
        assert history[0].status == first_status
        if first_status == turn_pb2.TURN_STATUS_CANCELLED:
            assert history[0].reply_text == reply_text(head), "interrupt keeps the partial answer"


async def test_reject_policy_answers_failed_precondition_while_busy(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub, double_texting=session_pb2.DOUBLE_TEXTING_POLICY_REJECT)
        first = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="busy"))
        head: list[turn_pb2.TurnEvent] = []
        await _read_until(first, 3, head)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect_turn(stub, session_id, "too soon")
        await _rest(first, head)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(info.value.trailing_metadata() or ())["salon-error-reason"] == "SESSION_BUSY"
    assert head[-1].HasField("completed")


async def test_resume_after_the_client_connection_drops_gets_every_later_event_once(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="resume me"))
        seen: list[turn_pb2.TurnEvent] = []
        await _read_until(call, 6, seen)
    # That channel is gone; the turn goes on (disconnect policy: continue). Resume on a new connection.
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        request = cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=seen[0].turn_id, after_seq=seen[-1].seq)
        rest = [r.event async for r in stub.ResumeTurn(request)]
        again = [r.event async for r in stub.ResumeTurn(request)]  # and once more, after it finished
    events = seen + rest
    assert_well_formed(events, session_id)
    assert reply_text(events) == "".join(scripted_reply("resume me", 40))
    assert again == rest
    # Resumed after its last event, the finished turn's stream ends at once, empty (no wait for the turn timeout).
    after_end = cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=seen[0].turn_id, after_seq=events[-1].seq)
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        assert [r.event async for r in stub.ResumeTurn(after_end, timeout=20)] == []


async def test_disconnect_policy_cancel_stops_the_turn(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub, disconnect_policy=session_pb2.DISCONNECT_POLICY_CANCEL)
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="stop when I leave"))
        seen: list[turn_pb2.TurnEvent] = []
        await _read_until(call, 4, seen)
        call.cancel()

        async def cancelled() -> bool:
            history = await _history(stub, session_id)
            return bool(history) and history[0].status == turn_pb2.TURN_STATUS_CANCELLED

        await wait_for(cancelled, timeout_s=30, what="the turn to be recorded as cancelled")


async def test_deadline_shorter_than_the_turn_cancels_it_upstream(slow: Engine) -> None:
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect_turn(stub, session_id, "too slow", timeout=0.4)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def cancelled() -> bool:
            history = await _history(stub, session_id)
            return bool(history) and history[0].status == turn_pb2.TURN_STATUS_CANCELLED

        await wait_for(cancelled, timeout_s=30, what="the turn to be cancelled at its deadline")
        assert (await collect_turn(stub, session_id, "next"))[-1].HasField("completed")


async def test_burst_past_the_admission_limit_gets_resource_exhausted(make_engine: Any) -> None:
    engine: Engine = await make_engine(max_turns_per_host=2, max_turns_per_tenant=2, **SLOW)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        sessions = [await create_session(stub) for _ in range(10)]
        results = await asyncio.gather(*(collect_turn(stub, s, "burst") for s in sessions), return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        done = [r for r in results if not isinstance(r, BaseException)]
        assert refused and done, "some turns run, the rest are refused"
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(error.trailing_metadata() or ())
            assert trailers["salon-error-reason"] == "TOO_MANY_TURNS" and int(trailers["salon-retry-after-ms"]) > 0
        assert all(r[-1].HasField("completed") for r in done)

        async def taken_again() -> bool:
            # A host frees a turn's slot once the turn is recorded, a moment after its client saw `completed`:
            # a client retries after the hint, as told.
            try:
                return (await collect_turn(stub, sessions[0], "after the burst"))[-1].HasField("completed")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False

        await wait_for(taken_again, timeout_s=30, what="a turn to be taken after the burst")


async def test_a_client_that_stops_reading_does_not_hold_up_its_turn_or_others(make_engine: Any) -> None:
    # The cut-off itself (relay stopped, then SLOW_CONSUMER) is checked in tests/unit/test_servicer_cutoff.py:
    # whether a real client's transport stalls depends on its flow-control windows (the Python library keeps
    # reading into its own buffers, several MB deep).
    engine: Engine = await make_engine(scripted_tokens=2000, stream_write_timeout_s=0.2)
    big = "x" * 2000
    stuck_options = [("grpc.http2.bdp_probe", 0)]
    async with (
        grpc.aio.insecure_channel(engine.target, options=stuck_options) as stuck_channel,
        grpc.aio.insecure_channel(engine.target) as channel,
    ):
        stuck_stub = cs_grpc.ConversationServiceStub(stuck_channel)
        stub = cs_grpc.ConversationServiceStub(channel)
        stuck_session, other = await create_session(stub), await create_session(stub)
        stuck = stuck_stub.SendTurn(cs_pb2.SendTurnRequest(session_id=stuck_session, text=big))
        first = await stuck.read()
        assert first.event.HasField("accepted")
        others = await collect_turn(stub, other, "unaffected")
        assert others[-1].HasField("completed"), "other clients are unaffected"

        async def recorded() -> bool:
            history = await _history(stub, stuck_session)
            return bool(history) and history[0].status == turn_pb2.TURN_STATUS_COMPLETED

        await wait_for(recorded, timeout_s=60, what="the stalled client's turn to complete and be recorded")
        stuck.cancel()


async def test_resume_on_another_gateway_after_the_first_is_killed(slow: Engine) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    env.update(
        SALON_NATS_URL=slow.nats_url,
        SALON_NAMESPACE=slow.config.namespace,
        SALON_NUM_SHARDS=str(slow.config.num_shards),
    )
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "serve",
        "--gateway-only",
        "--port",
        "0",
        "--data-dir",
        slow.config.data_dir,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert gateway.stderr is not None
        target = ""
        while not target:
            line = await asyncio.wait_for(gateway.stderr.readline(), 120)
            assert line, "the gateway exited at start"
            if match := re.search(r"gRPC gateway on (\S+)", line.decode()):
                target = match.group(1)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="outlive my gateway"))
            seen: list[turn_pb2.TurnEvent] = []
            await _read_until(call, 5, seen)
            gateway.send_signal(signal.SIGKILL)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _rest(call, seen)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        if gateway.returncode is None:
            gateway.kill()
        await gateway.wait()
    async with grpc.aio.insecure_channel(slow.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        request = cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=seen[0].turn_id, after_seq=seen[-1].seq)
        rest = [r.event async for r in stub.ResumeTurn(request)]
    events = seen + rest
    assert_well_formed(events, session_id)
    assert reply_text(events) == "".join(scripted_reply("outlive my gateway", 40))
