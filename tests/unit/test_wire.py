"""The edge between the session's event records and the API's ``TurnEvent``: one to one, both ways, and what
session logic may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from salon.actors.context import PassageEntry
from salon.actors.emitter import TurnEmitter, recorded_events
from salon.actors.events import (
    Accepted,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    Failed,
    Guardrail,
    TurnEvent,
    Unrecognized,
    Usage,
)
from salon.actors.model import ModelResult
from salon.actors.wire import event_from_proto, event_to_proto, is_terminal, record_events
from salon.storage import GuardrailDecision, TurnRecord
from salon.v1 import turn_pb2

ROOT = Path(__file__).resolve().parents[2]

DECISION = GuardrailDecision("injection", "flag", "PROMPT_INJECTION", "passage", 2, 1.5, ("override", "role"), 3)


def _proto(seq: int, **kind: object) -> turn_pb2.TurnEvent:
    return turn_pb2.TurnEvent(
        session_id="s1",
        turn_id="t1",
        seq=seq,
        time=Timestamp(seconds=1_700_000_000, nanos=123_456_789),
        **kind,  # type: ignore[arg-type]
    )


PROTOS = [
    _proto(1, accepted=turn_pb2.TurnAccepted(queue_position=2, trace_id="ab" * 16, replayed=True)),
    _proto(
        2,
        citations=turn_pb2.Citations(
            citations=[turn_pb2.Citation(source="knowledge", document_id="d", chunk_id="c", score=0.5, title="T")]
        ),
    ),
    _proto(3, delta=turn_pb2.TokenDelta(text="hello ")),
    _proto(4, delta=turn_pb2.TokenDelta()),
    _proto(
        5,
        guardrail=turn_pb2.GuardrailNotice(
            decisions=[
                turn_pb2.GuardrailDecision(
                    check="redaction", action="redact", reason="EMAIL", source="output", count=2, passage=-1
                )
            ]
        ),
    ),
    _proto(6, usage=turn_pb2.Usage(input_tokens=10, output_tokens=5, provider="p", model="m", estimated_cost_usd=0.25)),
    _proto(7, completed=turn_pb2.TurnCompleted(stop_reason=turn_pb2.STOP_REASON_MAX_TOKENS)),
    _proto(7, completed=turn_pb2.TurnCompleted()),
    _proto(7, error=turn_pb2.TurnError(reason="X", message="m", retryable=True, retry_after=Duration(seconds=1))),
    _proto(7, error=turn_pb2.TurnError(reason="X", message="m", partial=True)),
    _proto(7, cancelled=turn_pb2.TurnCancelled(reason="stop")),
    _proto(7, cancelled=turn_pb2.TurnCancelled()),
    _proto(8),
]


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: str(p.WhichOneof("kind")))
def test_events_read_from_the_bus_are_sent_again_unchanged(proto: turn_pb2.TurnEvent) -> None:
    event = event_from_proto(proto)
    assert event.kind == (proto.WhichOneof("kind") or "")
    assert event.terminal == is_terminal(proto)
    assert event_to_proto(event) == proto
    assert event_to_proto(event).SerializeToString(deterministic=True) == proto.SerializeToString(deterministic=True)


def test_records_of_every_kind_become_the_api_events() -> None:
    def event(seq: int, body: object) -> turn_pb2.TurnEvent:
        return event_to_proto(TurnEvent("s1", "t1", seq, 1_700_000_000_500_000_000, body))  # type: ignore[arg-type]

    assert event(1, Accepted(1, "tid")).accepted == turn_pb2.TurnAccepted(queue_position=1, trace_id="tid")
    cited = event(2, Citations((Citation("memory", "d", "c", 0.75, 4, "T"),))).citations.citations[0]
    assert (cited.source, cited.chunk_id, cited.score, cited.table_version, cited.title) == (
        "memory",
        "c",
        0.75,
        4,
        "T",
    )
    assert event(3, Delta("x")).delta.text == "x"
    assert event(3, Delta("")).HasField("delta")
    notice = event(4, Guardrail((DECISION,))).guardrail.decisions[0]
    assert (notice.check, notice.rules, notice.passage, notice.score) == ("injection", ["override", "role"], 3, 1.5)
    usage = event(5, Usage.of(ModelResult(input_tokens=3, output_tokens=4, provider="p", model="m"))).usage
    assert (usage.input_tokens, usage.output_tokens, usage.provider, usage.model) == (3, 4, "p", "m")
    assert event(6, Completed("tool_use")).completed.stop_reason == turn_pb2.STOP_REASON_TOOL_USE
    assert event(6, Completed("whatever")).completed.stop_reason == turn_pb2.STOP_REASON_UNSPECIFIED
    failed = event(6, Failed("R", "m", retryable=True, retry_after_s=1.5)).error
    assert (failed.retry_after.seconds, failed.retry_after.nanos) == (1, 500_000_000)
    assert event(6, Failed("R", "m", retry_after_s=0.0)).error.HasField("retry_after")
    assert not event(6, Failed("R", "m")).error.HasField("retry_after")
    assert event(6, Cancelled("c")).cancelled.reason == "c"
    assert event(6, Unrecognized("tool_call")).WhichOneof("kind") is None
    stamped = event(7, Delta("t"))
    assert (stamped.time.seconds, stamped.time.nanos, stamped.seq) == (1_700_000_000, 500_000_000, 7)


async def test_a_records_api_events_are_its_session_events_converted() -> None:
    record = TurnRecord(
        tenant_id="acme",
        session_id="s1",
        turn_id="t1",
        incarnation="1",
        turn_index=1,
        status="completed",
        user_text="q",
        reply_text="a b",
        deltas=("a ", "b"),
        stop_reason="end_turn",
        input_tokens=3,
        output_tokens=2,
        guardrails=(DECISION,),
    )
    mine = await recorded_events(record)
    api = await record_events(record)
    assert [e.kind for e in mine] == ["accepted", "guardrail", "delta", "delta", "usage", "completed"]
    assert [(e.seq, e.WhichOneof("kind")) for e in api] == [(e.seq, e.kind) for e in mine]
    assert [e.seq for e in await record_events(record, after_seq=4)] == [5, 6]


async def test_the_emitter_numbers_from_where_an_earlier_attempt_stopped_and_stops_at_the_end() -> None:
    sent: list[TurnEvent] = []

    async def sink(event: TurnEvent) -> None:
        sent.append(event)

    emitter = TurnEmitter("s1", "t1", sink, start_seq=3)
    pieces: list[str] = []
    await emitter.citations([PassageEntry("knowledge", "d", "c", 0.5, 1)])
    await emitter.delta("x", pieces)
    await emitter.cancelled("stop")
    await emitter.delta("late", pieces)
    assert [(e.seq, e.kind) for e in sent] == [(4, "citations"), (5, "delta"), (6, "cancelled")]
    assert emitter.finished and emitter.last_seq == 6


SESSION_LOGIC_ROOTS = ("salon.actors.session",)
EDGE = ("salon.v1", "grpc", "nats", "ray", "lancedb", "pyarrow", "google.protobuf")


def _imports(module: str) -> set[str]:
    path = ROOT / (module.removeprefix("salon.").replace(".", "/") + ".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_session_logic_imports_no_api_or_infrastructure_types() -> None:
    """The actors modules the session is made of (not what storage loads: that is the storage package's
    face) import no protobuf, gRPC, NATS, Ray or LanceDB."""
    seen: set[str] = set()
    todo = list(SESSION_LOGIC_ROOTS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imported = _imports(module)
        offending = sorted(n for n in imported if n.startswith(EDGE))
        assert not offending, f"{module} imports {offending}"
        todo += [n for n in imported if n.startswith("salon.actors.")]
    assert {
        "salon.actors.turn_queue",
        "salon.actors.running",
        "salon.actors.prompt",
        "salon.actors.model_call",
        "salon.actors.events",
    } <= seen
    assert "salon.actors.wire" not in seen and "salon.actors.host" not in seen
