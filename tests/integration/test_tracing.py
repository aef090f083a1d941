"""One trace per turn across processes: gateway (driver), NATS, host (Ray actor); jsonl span files per
process in one directory; content kept out; the Prometheus endpoint counting turns."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import EngineFactory, wait_for

import otel
from otel import attributes as attrs
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

pytestmark = pytest.mark.integration

CANARY = "canary-51d2e8-not-in-spans"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def test_a_turn_is_one_trace_across_processes(make_engine: EngineFactory, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    engine = await make_engine(telemetry="jsonl", telemetry_dir=str(traces), metrics_port=0)
    metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session = (await stub.CreateSession(cs_pb2.CreateSessionRequest())).session.session_id
        request = cs_pb2.SendTurnRequest(session_id=session, text=f"hello {CANARY}")
        events = [r.event async for r in stub.SendTurn(request, metadata=metadata)]
    turn_id = events[0].turn_id
    wanted = {attrs.SPAN_GATEWAY_SEND_TURN, attrs.SPAN_TURN_PUBLISH, attrs.SPAN_HOST_TURN, attrs.SPAN_SESSION_TURN}

    async def all_there() -> bool:
        otel.force_flush()
        names = {s.name for s in otel.read_spans(traces) if s.trace_id == CALLER_TRACE}
        return wanted <= names and attrs.SPAN_LEDGER_APPEND in names

    await wait_for(all_there, what="the turn's spans in the span files")
    spans = otel.find_trace(otel.read_spans(traces), turn_id=turn_id)
    named = {s.name: s for s in spans if s.trace_id == CALLER_TRACE}
    server, producer = named[attrs.SPAN_GATEWAY_SEND_TURN], named[attrs.SPAN_TURN_PUBLISH]
    consumer, session_span = named[attrs.SPAN_HOST_TURN], named[attrs.SPAN_SESSION_TURN]
    model = next(s for s in spans if s.name.startswith("chat"))
    assert (server.kind, server.parent_span_id, server.process) == ("SERVER", CALLER_SPAN, "gateway")
    assert (producer.kind, producer.parent_span_id) == ("PRODUCER", server.span_id)
    assert (consumer.kind, consumer.parent_span_id) == ("CONSUMER", producer.span_id)
    assert consumer.process.startswith("host-") and attrs.QUEUE_WAIT_MS in consumer.attributes
    assert session_span.parent_span_id == consumer.span_id
    assert (model.kind, model.parent_span_id) == ("CLIENT", session_span.span_id)
    assert model.attributes[attrs.GEN_AI_PROVIDER] == "scripted"
    assert model.attributes[attrs.GEN_AI_OUTPUT_TOKENS] == 8
    assert named[attrs.SPAN_LEDGER_APPEND].parent_span_id == session_span.span_id
    everything = "".join(f.read_text() for f in traces.glob("*.jsonl"))
    assert CANARY not in everything
    assert all(CANARY not in json.dumps(s.attributes) for s in spans)

    url = f"http://127.0.0.1:{otel.metrics_port()}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert "salon_turn_time_to_first_token_seconds_count" in body
    assert "salon_turns_total{" in body and 'outcome="completed"' in body
