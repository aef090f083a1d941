"""Spans of a turn inside a host, exported in memory: parents and kinds, GenAI attributes, and message
content kept out of every span unless capture is enabled (a canary string in the user's text)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from unit_support import EventLog, local, wait_for

from salon import otel
from salon.actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.otel import attributes as attrs
from salon.providers import ScriptedProvider
from salon.storage.inmemory import InMemoryJournal

KEY = SessionKey("acme", "s1")
CANARY = "canary-7f3a9c-do-not-export"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def _exporter(capture: bool) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    otel.setup(otel.TelemetrySettings(capture_content=capture), exporter=exporter)
    try:
        yield exporter
    finally:
        otel.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans exported in memory, content capture off (the default)."""
    yield from _exporter(capture=False)


@pytest.fixture
def spans_with_content() -> Iterator[InMemorySpanExporter]:
    """Spans exported in memory, content capture on."""
    yield from _exporter(capture=True)


async def _run_turn(text: str) -> None:
    """One turn as a host runs it: a CONSUMER span from the bus headers, the session's spans under it."""
    journal = InMemoryJournal()
    loaded, log = await journal.open(KEY.tenant_id, KEY.session_id, "1", "host-a")
    settings = SessionSettings(system_prompt=f"system {CANARY}", model="scripted-1")
    actor = SessionActor(KEY, settings, SessionState.restore(loaded, "1", 40), ScriptedProvider(tokens=4), log)
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, {"traceparent": TRACEPARENT})
    acked: list[str] = []

    async def done() -> None:
        consumer.end()
        acked.append("t1")

    try:
        turn = Turn("t1", text, trace_id=consumer.trace_id_hex, trace_context=consumer.context())
        await actor.submit(local(turn, EventLog(), done))
        await wait_for(lambda: acked == ["t1"], what="the turn's ack")
    finally:
        await actor.close()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def _everything(span: ReadableSpan) -> str:
    """All a span exports that could hold text: name, attributes, events."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps([span.name, dict(span.attributes or {}), events], default=str)


async def test_a_turn_makes_one_connected_trace_with_genai_attributes(spans: InMemorySpanExporter) -> None:
    await _run_turn(f"hello {CANARY}")
    named = _by_name(spans)
    host, session = named[attrs.SPAN_HOST_TURN], named[attrs.SPAN_SESSION_TURN]
    model, ledger = named["chat scripted-1"], named[attrs.SPAN_LEDGER_APPEND]
    events = named[attrs.SPAN_EVENTS_PUBLISH]
    assert {format(s.context.trace_id, "032x") for s in named.values()} == {CALLER_TRACE}
    assert host.parent is not None and format(host.parent.span_id, "016x") == CALLER_SPAN
    assert host.kind == SpanKind.CONSUMER
    assert session.parent is not None and session.parent.span_id == host.context.span_id
    for child in (model, ledger, events):
        assert child.parent is not None and child.parent.span_id == session.context.span_id
    assert (model.kind, ledger.kind, events.kind) == (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.PRODUCER)
    a = dict(model.attributes or {})
    assert a[attrs.GEN_AI_OPERATION] == "chat"
    assert a[attrs.GEN_AI_PROVIDER] == a[attrs.GEN_AI_SYSTEM] == "scripted"
    assert a[attrs.GEN_AI_REQUEST_MODEL] == "scripted-1"
    assert a[attrs.GEN_AI_OUTPUT_TOKENS] == 4
    assert a[attrs.GEN_AI_INPUT_TOKENS] > 0
    assert a[attrs.GEN_AI_FINISH_REASONS] == ("end_turn",)
    assert a[attrs.TTFT_MS] >= 0
    assert (session.attributes or {})[attrs.TURN_STATUS] == "completed"
    assert (session.attributes or {})[attrs.TURN_ID] == "t1"


async def test_content_stays_out_of_spans_by_default(spans: InMemorySpanExporter) -> None:
    await _run_turn(f"hello {CANARY}")
    exported = spans.get_finished_spans()
    assert len(exported) >= 5
    for span in exported:
        assert CANARY not in _everything(span), span.name
        assert not set(span.attributes or {}) & set(attrs.CONTENT_ATTRIBUTES)


async def test_content_is_captured_in_the_genai_opt_in_attributes_when_enabled(
    spans_with_content: InMemorySpanExporter,
) -> None:
    await _run_turn(f"hello {CANARY}")
    named = _by_name(spans_with_content)
    model = dict(named["chat scripted-1"].attributes or {})
    assert CANARY in str(model[attrs.GEN_AI_INPUT_MESSAGES])
    assert CANARY in str(model[attrs.GEN_AI_SYSTEM_INSTRUCTIONS])
    assert CANARY in str(model[attrs.GEN_AI_OUTPUT_MESSAGES])  # the scripted answer echoes the question
    assert json.loads(str(model[attrs.GEN_AI_INPUT_MESSAGES]))[-1]["role"] == "user"
    # Only the model span, only in the documented attributes.
    for span in spans_with_content.get_finished_spans():
        visible = {k: v for k, v in (span.attributes or {}).items() if k not in attrs.CONTENT_ATTRIBUTES}
        assert CANARY not in json.dumps([span.name, visible], default=str)


def test_producer_span_is_the_consumers_parent(spans: InMemorySpanExporter) -> None:
    with otel.producer_span(attrs.SPAN_TURN_PUBLISH, {"traceparent": TRACEPARENT}) as producer:
        headers = producer.headers()
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, headers, enqueued_at_ns=1)
    consumer.end()
    named = _by_name(spans)
    sent, got = named[attrs.SPAN_TURN_PUBLISH], named[attrs.SPAN_HOST_TURN]
    assert sent.kind == SpanKind.PRODUCER
    assert sent.parent is not None and format(sent.parent.span_id, "016x") == CALLER_SPAN
    assert got.parent is not None and got.parent.span_id == sent.context.span_id
    assert (got.attributes or {})[attrs.QUEUE_WAIT_MS] > 0


def test_without_telemetry_spans_are_no_ops_that_pass_the_trace_id_on() -> None:
    otel.shutdown()
    assert not otel.capture_content()
    with otel.producer_span(attrs.SPAN_TURN_PUBLISH, {"traceparent": TRACEPARENT}) as producer:
        assert not producer.span.is_recording()
        headers = producer.headers()
    assert headers["traceparent"] == TRACEPARENT
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, headers)
    assert consumer.trace_id_hex == CALLER_TRACE
    assert not consumer.span.is_recording()
    consumer.end()
    with otel.span("anything") as span:
        assert not span.is_recording()


async def _run_tool_turn() -> None:
    """A turn whose model calls a client tool (its result answered at once), under a host's CONSUMER span."""
    from salon.actors.control import SubmitToolResult
    from salon.actors.model import ToolSpec
    from salon.actors.tools import ToolSelection

    journal = InMemoryJournal()
    loaded, log = await journal.open(KEY.tenant_id, KEY.session_id, "1", "host-a")
    settings = SessionSettings(tools=ToolSelection(tools=(ToolSpec("lookup"),)))
    actor = SessionActor(KEY, settings, SessionState.restore(loaded, "1", 40), ScriptedProvider(tokens=2), log)
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, {"traceparent": TRACEPARENT})
    sink = EventLog()
    acked: list[str] = []

    async def done() -> None:
        consumer.end()
        acked.append("t1")

    try:
        turn = Turn("t1", f'$CALL lookup {{"q": "{CANARY}"}}\nsaw', trace_context=consumer.context())
        await actor.submit(local(turn, sink, done))
        await wait_for(lambda: any(e.HasField("tool_call") for e in sink.events), what="the tool call")
        await actor.answer(SubmitToolResult(KEY.tenant_id, KEY.session_id, "t1", "call_1_1", content=CANARY))
        await wait_for(lambda: acked == ["t1"], what="the turn's ack")
    finally:
        await actor.close()


async def test_each_tool_call_has_an_execute_tool_span_and_each_round_a_chat_span(
    spans: InMemorySpanExporter,
) -> None:
    await _run_tool_turn()
    finished = spans.get_finished_spans()
    [tool] = [s for s in finished if s.name == "execute_tool lookup"]
    assert tool.kind == SpanKind.INTERNAL
    attributes = dict(tool.attributes or {})
    assert attributes[attrs.GEN_AI_OPERATION] == "execute_tool"
    assert (attributes[attrs.GEN_AI_TOOL_NAME], attributes[attrs.GEN_AI_TOOL_CALL_ID]) == ("lookup", "call_1_1")
    assert (attributes[attrs.GEN_AI_TOOL_TYPE], attributes[attrs.TOOL_SOURCE]) == ("function", "client")
    [turn_span] = [s for s in finished if s.name == attrs.SPAN_SESSION_TURN]
    assert tool.parent is not None and tool.parent.span_id == turn_span.context.span_id
    assert len([s for s in finished if s.name.startswith("chat")]) == 2, "one chat span per model round"
    assert all(CANARY not in _everything(s) for s in finished), "arguments and results stay out by default"


async def test_tool_arguments_and_results_are_captured_only_when_enabled(
    spans_with_content: InMemorySpanExporter,
) -> None:
    await _run_tool_turn()
    [tool] = [s for s in spans_with_content.get_finished_spans() if s.name == "execute_tool lookup"]
    attributes = dict(tool.attributes or {})
    assert CANARY in str(attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS])
    assert attributes[attrs.GEN_AI_TOOL_CALL_RESULT] == CANARY
