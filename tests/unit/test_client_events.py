"""The client's typed events and its Turn (retry, resume, dedupe, deadline) against a fake stub: no sockets."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from salon.client import (
    NO_RETRY,
    Accepted,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    Failed,
    RetryPolicy,
    SalonClient,
    SalonError,
    Turn,
    Usage,
    event_from_proto,
)
from salon.client.policies import disconnect_value, double_texting_value
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2

SESSION = "s1"
KEY = "key-1"


# --- fakes --------------------------------------------------------------------------------------------------


def rpc_error(
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, reason: str = "", retry_after_ms: int | None = None
) -> grpc.aio.AioRpcError:
    """A real ``AioRpcError`` as grpc.aio raises it, with Salon's trailing metadata."""
    trailers: list[tuple[str, str]] = []
    if reason:
        trailers.append(("salon-error-reason", reason))
    if retry_after_ms is not None:
        trailers.append(("salon-retry-after-ms", str(retry_after_ms)))
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=f"fake {code.name.lower()}"
    )


def event(seq: int, kind: str = "delta", text: str = "", turn_id: str = KEY) -> turn_pb2.TurnEvent:
    """A TurnEvent of the given kind."""
    proto = turn_pb2.TurnEvent(session_id=SESSION, turn_id=turn_id, seq=seq)
    if kind == "accepted":
        proto.accepted.SetInParent()
    elif kind == "delta":
        proto.delta.text = text or f"t{seq} "
    elif kind == "usage":
        proto.usage.output_tokens = seq
    elif kind == "completed":
        proto.completed.stop_reason = turn_pb2.STOP_REASON_END_TURN
    elif kind == "cancelled":
        proto.cancelled.reason = "CANCELLED_BY_CLIENT"
    elif kind == "error":
        proto.error.reason = "MODEL_UNAVAILABLE"
    return proto


def full_turn(deltas: int = 4) -> list[turn_pb2.TurnEvent]:
    """accepted, ``deltas`` deltas, usage, completed: seq 1..deltas+3."""
    events = [event(1, "accepted")]
    events += [event(i + 2) for i in range(deltas)]
    events += [event(deltas + 2, "usage"), event(deltas + 3, "completed")]
    return events


class FakeCall:
    """A streaming call: yields its events, then raises its error (if any)."""

    def __init__(self, events: list[turn_pb2.TurnEvent], error: grpc.aio.AioRpcError | None = None) -> None:
        self.events = events
        self.error = error
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        for e in self.events:
            yield cs_pb2.SendTurnResponse(event=e)
        if self.error is not None:
            raise self.error

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeStub:
    """Answers each SendTurn/ResumeTurn with the next scripted call and records every request."""

    def __init__(self, *script: FakeCall | grpc.aio.AioRpcError) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, Any, dict[str, Any]]] = []
        self.calls: list[FakeCall] = []
        self.cancel_error: grpc.aio.AioRpcError | None = None

    def _next(self, method: str, request: Any, kwargs: dict[str, Any]) -> FakeCall:
        self.requests.append((method, request, kwargs))
        step = self.script.pop(0)
        call = FakeCall([], step) if isinstance(step, grpc.aio.AioRpcError) else step
        self.calls.append(call)
        return call

    def SendTurn(self, request: cs_pb2.SendTurnRequest, **kwargs: Any) -> FakeCall:
        return self._next("SendTurn", request, kwargs)

    def ResumeTurn(self, request: cs_pb2.ResumeTurnRequest, **kwargs: Any) -> FakeCall:
        return self._next("ResumeTurn", request, kwargs)

    async def CancelTurn(self, request: cs_pb2.CancelTurnRequest, **kwargs: Any) -> cs_pb2.CancelTurnResponse:
        self.requests.append(("CancelTurn", request, kwargs))
        if self.cancel_error is not None:
            raise self.cancel_error
        return cs_pb2.CancelTurnResponse()

    @property
    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


class FakeTime:
    """A clock that only moves when the turn sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_turn(stub: FakeStub, fake_time: FakeTime, **kwargs: Any) -> Turn:
    request = cs_pb2.SendTurnRequest(session_id=SESSION, text="hi", idempotency_key=KEY)
    kwargs.setdefault("retry", RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, max_retries=3))
    return Turn(
        stub,
        session_id=SESSION,
        turn_id=KEY,
        request=request,
        metadata=[("x-test", "1")],
        rng=random.Random(7),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        **kwargs,
    )


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


# --- the converter ------------------------------------------------------------------------------------------


def test_every_kind_converts_to_its_dataclass_with_the_common_fields() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(when)
    accepted = turn_pb2.TurnEvent(
        session_id="s",
        turn_id="t",
        seq=1,
        time=ts,
        accepted=turn_pb2.TurnAccepted(queue_position=2, trace_id="abc", replayed=True),
    )
    converted = event_from_proto(accepted)
    assert converted == Accepted(
        session_id="s", turn_id="t", seq=1, time=when, queue_position=2, trace_id="abc", replayed=True
    )
    assert converted.kind == "accepted" and not converted.terminal

    cites = turn_pb2.TurnEvent(seq=2)
    cites.citations.citations.add(
        source="knowledge", document_id="d", chunk_id="c", score=0.5, table_version=3, title="T"
    )
    assert event_from_proto(cites) == Citations(
        session_id="",
        turn_id="",
        seq=2,
        citations=(Citation(source="knowledge", document_id="d", chunk_id="c", score=0.5, table_version=3, title="T"),),
    )
    assert event_from_proto(turn_pb2.TurnEvent(seq=3, delta=turn_pb2.TokenDelta(text="hé"))) == Delta(
        session_id="", turn_id="", seq=3, text="hé"
    )
    usage = turn_pb2.Usage(
        input_tokens=10,
        output_tokens=20,
        cache_read_input_tokens=1,
        cache_creation_input_tokens=2,
        estimated_cost_usd=0.25,
        provider="scripted",
        model="m",
    )
    assert event_from_proto(turn_pb2.TurnEvent(seq=4, usage=usage)) == Usage(
        session_id="",
        turn_id="",
        seq=4,
        input_tokens=10,
        output_tokens=20,
        cache_read_input_tokens=1,
        cache_creation_input_tokens=2,
        estimated_cost_usd=0.25,
        provider="scripted",
        model="m",
    )


def test_terminal_kinds() -> None:
    completed = event_from_proto(
        turn_pb2.TurnEvent(
            seq=5,
            completed=turn_pb2.TurnCompleted(stop_reason=turn_pb2.STOP_REASON_STOP_SEQUENCE, stop_sequence="END"),
        )
    )
    assert completed == Completed(session_id="", turn_id="", seq=5, stop_reason="stop_sequence", stop_sequence="END")
    assert completed.terminal
    error = turn_pb2.TurnError(
        reason="MODEL_UNAVAILABLE", message="down", retryable=True, retry_after=Duration(seconds=1, nanos=500_000_000)
    )
    failed = event_from_proto(turn_pb2.TurnEvent(seq=6, error=error))
    assert isinstance(failed, Failed) and failed.terminal and failed.kind == "error"
    assert (failed.reason, failed.message, failed.retryable, failed.retry_after_s, failed.partial) == (
        "MODEL_UNAVAILABLE",
        "down",
        True,
        1.5,
        False,
    )
    no_hint = event_from_proto(turn_pb2.TurnEvent(seq=6, error=turn_pb2.TurnError(reason="X")))
    assert isinstance(no_hint, Failed) and no_hint.retry_after_s is None
    cancelled = event_from_proto(turn_pb2.TurnEvent(seq=7, cancelled=turn_pb2.TurnCancelled(reason="BY_CLIENT")))
    assert cancelled == Cancelled(session_id="", turn_id="", seq=7, reason="BY_CLIENT") and cancelled.terminal


def test_unknown_or_missing_kind_is_none_and_unknown_stop_reason_is_kept_as_a_number() -> None:
    assert event_from_proto(turn_pb2.TurnEvent(seq=1)) is None
    odd = turn_pb2.TurnEvent(seq=2)
    odd.completed.stop_reason = 99  # type: ignore[assignment]  # a reason added after this client
    converted = event_from_proto(odd)
    assert isinstance(converted, Completed) and converted.stop_reason == "99"
    unspecified = event_from_proto(turn_pb2.TurnEvent(seq=3, completed=turn_pb2.TurnCompleted()))
    assert isinstance(unspecified, Completed) and unspecified.stop_reason == "unspecified"


def test_events_are_frozen() -> None:
    delta = Delta(session_id="s", turn_id="t", seq=1, text="x")
    with pytest.raises(AttributeError):
        delta.text = "y"  # type: ignore[misc]
    assert delta.time is None


def test_policy_names_map_to_enum_values() -> None:
    assert double_texting_value("reject") == session_pb2.DOUBLE_TEXTING_POLICY_REJECT
    assert double_texting_value("rollback") == session_pb2.DOUBLE_TEXTING_POLICY_ROLLBACK
    assert double_texting_value(None) == session_pb2.DOUBLE_TEXTING_POLICY_UNSPECIFIED
    assert double_texting_value(session_pb2.DOUBLE_TEXTING_POLICY_INTERRUPT) == 3
    assert disconnect_value("cancel") == session_pb2.DISCONNECT_POLICY_CANCEL
    assert disconnect_value(None) == session_pb2.DISCONNECT_POLICY_UNSPECIFIED
    with pytest.raises(ValueError, match="double-texting"):
        double_texting_value("queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="disconnect"):
        disconnect_value("stay")  # type: ignore[arg-type]


# --- the retry policy ---------------------------------------------------------------------------------------


def test_backoff_grows_is_jittered_capped_and_floored_by_the_server_hint() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    rng = random.Random(1)
    for failures, step in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = {policy.backoff_s(failures, rng) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jittered
    assert policy.backoff_s(1, rng, hint_s=3.0) == 3.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)


# --- the Turn -----------------------------------------------------------------------------------------------


async def test_a_turn_yields_typed_events_and_ends_after_the_terminal_one(fake_time: FakeTime) -> None:
    stub = FakeStub(FakeCall([*full_turn(3), event(7, "delta", "never read")]))
    turn = make_turn(stub, fake_time)
    assert (turn.turn_id, turn.idempotency_key, turn.session_id) == (KEY, KEY, SESSION)
    assert not stub.requests  # nothing sent before iteration
    seen = [e async for e in turn]
    assert [type(e) for e in seen] == [Accepted, Delta, Delta, Delta, Usage, Completed]
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]
    assert turn.text == "t2 t3 t4 "
    assert turn.done and turn.final == seen[-1] and turn.last_seq == 6
    assert turn.events == tuple(seen) and len(turn.proto_events) == 6
    assert (turn.retries, turn.resumes) == (0, 0)
    method, request, kwargs = stub.requests[0]
    assert method == "SendTurn" and request.idempotency_key == KEY and request.text == "hi"
    assert kwargs == {"metadata": (("x-test", "1"),), "timeout": None}
    assert stub.calls[0].cancelled  # the call is always released
    assert fake_time.sleeps == []


async def test_stream_cut_after_some_events_resumes_after_the_last_seen(fake_time: FakeTime) -> None:
    events = full_turn(6)  # seq 1..9
    stub = FakeStub(FakeCall(events[:4], rpc_error()), FakeCall(events[4:]))
    turn = make_turn(stub, fake_time)
    seen = [e.seq async for e in turn]
    assert seen == list(range(1, 10))
    assert stub.methods == ["SendTurn", "ResumeTurn"]
    resume = stub.requests[1][1]
    assert (resume.session_id, resume.turn_id, resume.after_seq) == (SESSION, KEY, 4)
    assert (turn.retries, turn.resumes) == (1, 1)
    assert len(fake_time.sleeps) == 1 and 0.05 <= fake_time.sleeps[0] <= 0.1
    assert turn.text == "".join(f"t{i} " for i in range(2, 8))


async def test_events_seen_before_are_dropped_when_a_resume_overlaps(fake_time: FakeTime) -> None:
    events = full_turn(4)
    stub = FakeStub(FakeCall(events[:3], rpc_error()), FakeCall(events[1:]))
    turn = make_turn(stub, fake_time)
    assert [e.seq async for e in turn] == list(range(1, 8))


async def test_failure_before_any_event_resends_the_same_turn(fake_time: FakeTime) -> None:
    stub = FakeStub(rpc_error(), FakeCall([], rpc_error()), FakeCall(full_turn(2)))
    turn = make_turn(stub, fake_time)
    final = await turn.wait()
    assert isinstance(final, Completed)
    assert stub.methods == ["SendTurn", "SendTurn", "SendTurn"]
    assert {r.idempotency_key for _, r, _ in stub.requests} == {KEY}
    assert len(fake_time.sleeps) == 2 and fake_time.sleeps[1] > 0.1  # the second wait is a longer step


async def test_a_stream_that_ends_without_a_terminal_event_is_resumed(fake_time: FakeTime) -> None:
    events = full_turn(2)
    stub = FakeStub(FakeCall(events[:2]), FakeCall(events[2:]))
    turn = make_turn(stub, fake_time)
    assert [e.seq async for e in turn] == [1, 2, 3, 4, 5]
    assert stub.methods == ["SendTurn", "ResumeTurn"]


async def test_errors_not_worth_retrying_are_raised_at_once_with_their_reason(fake_time: FakeTime) -> None:
    stub = FakeStub(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, reason="SESSION_BUSY"))
    turn = make_turn(stub, fake_time)
    with pytest.raises(SalonError) as info:
        await turn.wait()
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "SESSION_BUSY"
    assert stub.methods == ["SendTurn"] and fake_time.sleeps == []


async def test_gives_up_after_max_retries_without_progress(fake_time: FakeTime) -> None:
    events = full_turn(2)
    stub = FakeStub(FakeCall(events[:2], rpc_error()), *[rpc_error(reason="GATEWAY_GONE") for _ in range(3)])
    turn = make_turn(stub, fake_time)  # max_retries=3
    with pytest.raises(SalonError) as info:
        async for _ in turn:
            pass
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.reason == "GATEWAY_GONE"
    assert stub.methods == ["SendTurn", "ResumeTurn", "ResumeTurn", "ResumeTurn"]
    assert turn.last_seq == 2 and not turn.done


async def test_progress_resets_the_count_of_failures(fake_time: FakeTime) -> None:
    events = full_turn(4)  # seq 1..7
    calls = [FakeCall([e], rpc_error()) for e in events[:-1]] + [FakeCall(events[-1:])]
    stub = FakeStub(*calls)
    turn = make_turn(stub, fake_time, retry=RetryPolicy(max_retries=1))
    assert [e.seq async for e in turn] == list(range(1, 8))
    assert turn.resumes == 6
    assert all(0.05 <= s <= 0.1 for s in fake_time.sleeps)  # every wait is a first step again


async def test_server_retry_hint_is_a_floor_and_elapsed_time_is_bounded(fake_time: FakeTime) -> None:
    stub = FakeStub(*[rpc_error(retry_after_ms=2500) for _ in range(5)])
    turn = make_turn(stub, fake_time, retry=RetryPolicy(max_retries=10, max_elapsed_s=6.0))
    with pytest.raises(SalonError):
        await turn.wait()
    assert fake_time.sleeps == [2.5, 2.5]  # a third wait would pass 6 s since the last progress
    assert len(stub.requests) == 3


async def test_no_retry_policy_raises_the_first_failure(fake_time: FakeTime) -> None:
    stub = FakeStub(FakeCall(full_turn(2)[:2], rpc_error()))
    turn = make_turn(stub, fake_time, retry=NO_RETRY)
    with pytest.raises(SalonError):
        await turn.wait()
    assert turn.text == "t2 "  # what was seen stays readable


async def test_a_gap_in_sequence_numbers_is_data_loss(fake_time: FakeTime) -> None:
    events = full_turn(3)
    stub = FakeStub(FakeCall([events[0], events[2]]))
    turn = make_turn(stub, fake_time)
    with pytest.raises(SalonError) as info:
        await turn.wait()
    assert info.value.code == grpc.StatusCode.DATA_LOSS and info.value.reason == "EVENT_SEQUENCE_GAP"
    assert stub.calls[0].cancelled


async def test_timeout_bounds_the_whole_turn_across_calls(fake_time: FakeTime) -> None:
    events = full_turn(2)
    stub = FakeStub(
        FakeCall(events[:2], rpc_error(retry_after_ms=4000)), FakeCall(events[2:3], rpc_error(retry_after_ms=7000))
    )
    turn = make_turn(stub, fake_time, timeout_s=10.0)
    with pytest.raises(SalonError) as info:
        await turn.wait()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    timeouts = [kwargs["timeout"] for _, _, kwargs in stub.requests]
    assert timeouts == [10.0, 6.0]  # the second call gets what is left; a third wait would pass the deadline
    assert turn.last_seq == 3


async def test_deadline_exceeded_is_not_retried(fake_time: FakeTime) -> None:
    stub = FakeStub(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    with pytest.raises(SalonError) as info:
        await make_turn(stub, fake_time, timeout_s=1.0).wait()
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_cancel_asks_the_engine_to_stop_the_turn(fake_time: FakeTime) -> None:
    events = [*full_turn(2)[:3], event(4, "cancelled")]
    stub = FakeStub(FakeCall(events))
    turn = make_turn(stub, fake_time)
    first = await anext(turn)
    assert isinstance(first, Accepted)
    await turn.cancel()
    assert stub.requests[-1][0] == "CancelTurn"
    cancel = stub.requests[-1][1]
    assert (cancel.session_id, cancel.turn_id) == (SESSION, KEY)
    final = await turn.wait()
    assert isinstance(final, Cancelled) and final.reason == "CANCELLED_BY_CLIENT"
    stub.cancel_error = rpc_error(grpc.StatusCode.NOT_FOUND, reason="TURN_NOT_FOUND")
    with pytest.raises(SalonError) as info:
        await turn.cancel()
    assert info.value.reason == "TURN_NOT_FOUND"


async def test_a_turn_is_iterated_once_as_typed_events_or_as_protos(fake_time: FakeTime) -> None:
    stub = FakeStub(FakeCall(full_turn(1)))
    turn = make_turn(stub, fake_time)
    protos = [p async for p in turn.protos()]
    assert [p.WhichOneof("kind") for p in protos] == ["accepted", "delta", "usage", "completed"]
    assert turn.text == "t2 " and isinstance(turn.final, Completed)
    with pytest.raises(RuntimeError):
        await anext(turn)
    reply = await make_turn(FakeStub(FakeCall(full_turn(2))), fake_time).reply()
    assert (reply.turn_id, reply.text, reply.outcome, reply.session_id) == (KEY, "t2 t3 ", "completed", SESSION)
    assert isinstance(reply.final, Completed) and reply.usage is not None and reply.usage.output_tokens == 4


async def test_closing_a_turn_early_cancels_its_call(fake_time: FakeTime) -> None:
    stub = FakeStub(FakeCall(full_turn(5)))
    async with make_turn(stub, fake_time) as turn:
        async for e in turn:
            if isinstance(e, Delta):
                break
    assert stub.calls[0].cancelled and not turn.done
    with pytest.raises(RuntimeError, match="closed before it ended"):
        await turn.wait()


async def test_unknown_kinds_are_skipped_in_typed_view_but_kept_in_protos(fake_time: FakeTime) -> None:
    events = full_turn(1)
    events.insert(2, turn_pb2.TurnEvent(session_id=SESSION, turn_id=KEY, seq=3))
    for i, e in enumerate(events):
        e.seq = i + 1
    stub = FakeStub(FakeCall(events))
    turn = make_turn(stub, fake_time)
    assert [e.seq async for e in turn] == [1, 2, 4, 5]
    assert len(turn.proto_events) == 5


def test_a_new_turn_must_be_named_by_its_key() -> None:
    request = cs_pb2.SendTurnRequest(session_id=SESSION, text="hi", idempotency_key="other")
    with pytest.raises(ValueError):
        Turn(FakeStub(), session_id=SESSION, turn_id=KEY, request=request)


# --- the client builds its requests (the channel is never used: no connection is made) ---------------------


class RecordingUnary:
    """Stands in for a unary stub method."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append((request, kwargs))
        return self.response


async def test_client_passes_policies_deadlines_and_metadata() -> None:
    client = SalonClient("127.0.0.1:9", metadata=[("authorization", "Bearer x")], timeout_s=3.0)
    try:
        create = RecordingUnary(cs_pb2.CreateSessionResponse(session=session_pb2.Session(session_id="abc")))
        stub = FakeStub(FakeCall(full_turn(1)))
        stub.CreateSession = create  # type: ignore[attr-defined]
        client.stub = stub
        session = await client.create_session(double_texting="reject", disconnect_policy="cancel")
        request, kwargs = create.calls[0]
        assert request.double_texting == session_pb2.DOUBLE_TEXTING_POLICY_REJECT
        assert request.disconnect_policy == session_pb2.DISCONNECT_POLICY_CANCEL
        assert kwargs == {"metadata": (("authorization", "Bearer x"),), "timeout": 3.0}
        turn = session.turn("hello", double_texting="interrupt", disconnect_policy="continue", metadata={"k": "v"})
        assert len(turn.idempotency_key) == 36  # a UUID unless given
        reply = await turn.reply()
        method, sent, kwargs = stub.requests[0]
        assert method == "SendTurn" and sent.session_id == "abc" and sent.idempotency_key == turn.idempotency_key
        assert sent.double_texting == session_pb2.DOUBLE_TEXTING_POLICY_INTERRUPT
        assert sent.disconnect_policy == session_pb2.DISCONNECT_POLICY_CONTINUE
        assert dict(sent.metadata) == {"k": "v"} and kwargs["metadata"] == (("authorization", "Bearer x"),)
        assert reply.outcome == "completed"
        resumed = client.resume_turn("abc", "t-9", after_seq=5)
        assert (resumed.turn_id, resumed.last_seq) == ("t-9", 5)
    finally:
        await client.close()


async def test_existing_send_api_yields_protos_and_resumes(fake_time: FakeTime) -> None:
    client = SalonClient("127.0.0.1:9")
    try:
        events = full_turn(3)
        client.stub = FakeStub(FakeCall(events[:3], rpc_error()), FakeCall(events[3:]))
        client._retry = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)
        seen = [e async for e in client.send_turn("s1", "hi", idempotency_key=KEY)]
        assert [e.seq for e in seen] == list(range(1, 7))
        assert all(isinstance(e, turn_pb2.TurnEvent) for e in seen)
    finally:
        await client.close()


def test_sub_second_retry_hints_survive() -> None:
    d = Duration()
    d.FromTimedelta(timedelta(milliseconds=250))
    failed = event_from_proto(turn_pb2.TurnEvent(seq=1, error=turn_pb2.TurnError(retry_after=d)))
    assert isinstance(failed, Failed) and failed.retry_after_s == 0.25
