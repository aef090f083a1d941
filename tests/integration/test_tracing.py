"""One trace per turn across processes: gateway (driver), NATS, host (Ray actor); jsonl span files per
process in one directory; content kept out; the Prometheus endpoint counting turns; OTLP export to a real
receiver; JSON logs of every process carrying the turn's ids and no content."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import EngineFactory, wait_for
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace_pb2
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings, OtelTapInitializationError

from salon import otel
from salon.otel import attributes as attrs
from salon.providers.fake_servers import FakeAnthropicServer, Reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc

pytestmark = pytest.mark.integration

CANARY = "canary-51d2e8-not-in-spans"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def test_a_turn_is_one_trace_across_processes(make_engine: EngineFactory, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    engine = await make_engine(telemetry="jsonl", telemetry_dir=str(traces), metrics_port=0, retrieval_min_score=0.0)
    metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        # A document for the turn's retrieval to find.
        knowledge = ks_grpc.KnowledgeServiceStub(channel)
        document = ks_pb2.Document(document_id="greetings", text="Say hello to every guest at the door.")
        replies = knowledge.IngestDocuments(iter([ks_pb2.IngestDocumentsRequest(documents=[document])]))
        assert [r.summary.succeeded async for r in replies if r.HasField("summary")] == [1]
        stub = cs_grpc.ConversationServiceStub(channel)
        session = (await stub.CreateSession(cs_pb2.CreateSessionRequest())).session.session_id
        request = cs_pb2.SendTurnRequest(session_id=session, text=f"hello {CANARY}")
        events = [r.event async for r in stub.SendTurn(request, metadata=metadata)]
    turn_id = events[0].turn_id
    wanted = {attrs.SPAN_GATEWAY_SEND_TURN, attrs.SPAN_TURN_PUBLISH, attrs.SPAN_HOST_TURN, attrs.SPAN_SESSION_TURN}

    def batch_writes() -> list[otel.SpanRecord]:
        return [
            s
            for s in otel.read_spans(traces)
            if s.name == attrs.SPAN_BATCH_WRITE and any(link["trace_id"] == CALLER_TRACE for link in s.links)
        ]

    async def all_there() -> bool:
        otel.force_flush()
        names = {s.name for s in otel.read_spans(traces) if s.trace_id == CALLER_TRACE}
        return wanted <= names and attrs.SPAN_LEDGER_APPEND in names and bool(batch_writes())

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
    # Context assembly, then retrieval in LanceDB with its counts, before the model call.
    assembly, retrieval = named[attrs.SPAN_CONTEXT], named[attrs.SPAN_RETRIEVAL]
    assert assembly.parent_span_id == session_span.span_id and retrieval.parent_span_id == assembly.span_id
    assert retrieval.attributes[attrs.RETRIEVAL_CHUNKS] >= 1 and retrieval.attributes[attrs.RETRIEVAL_PASSAGES] >= 1
    assert retrieval.end_ns <= model.start_ns
    ledger = named[attrs.SPAN_LEDGER_APPEND]
    assert (ledger.kind, ledger.parent_span_id) == ("PRODUCER", session_span.span_id)
    assert named[attrs.SPAN_EVENTS_PUBLISH].parent_span_id == session_span.span_id
    # The batch write is its own trace, in the writer's process, linked to the turn's ledger append.
    write = batch_writes()[0]
    assert write.trace_id != CALLER_TRACE and write.process == "writer"
    assert {"trace_id": CALLER_TRACE, "span_id": ledger.span_id} in write.links
    everything = "".join(f.read_text() for f in traces.glob("*.jsonl"))
    assert CANARY not in everything
    assert all(CANARY not in json.dumps(s.attributes) for s in spans)

    url = f"http://127.0.0.1:{otel.metrics_port()}/metrics"

    async def scrape() -> list[tuple[str, dict[str, str], float]]:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        return [_sample(line) for line in body.splitlines() if line and not line.startswith("#")]

    def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for n, have, v in samples if n == name and labels.items() <= have.items())

    # The deployment's figures are gathered every few seconds: wait for a round after the turn.
    async def host_figures_in() -> bool:
        return value(await scrape(), "salon_session_activations_total") >= 1

    await wait_for(host_figures_in, what="the hosts' figures in the scrape")
    samples = await scrape()
    assert value(samples, "salon_sessions_active") >= 1
    assert any(n == "salon_batch_flushes_total" for n, _, _ in samples)
    assert any(n == "salon_turns_waiting" and labels.get("salon_shard") == "0" for n, labels, _ in samples)
    assert value(samples, "salon_turn_time_to_first_token_seconds_count") >= 1
    assert value(samples, "salon_turns_total", outcome="completed") >= 1
    assert value(samples, "salon_tokens_total", salon_token_type="output") >= 8
    send_turn = "/salon.v1.ConversationService/SendTurn"
    assert value(samples, "salon_rpc_responses_total", rpc_method=send_turn, rpc_grpc_status_code="OK") >= 1


def _sample(line: str) -> tuple[str, dict[str, str], float]:
    """One Prometheus text-format sample: name, labels, value."""
    head, _, number = line.rpartition(" ")
    name, _, rest = head.partition("{")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return name, labels, float(number)


class OtlpReceiver:
    """A real OTLP/HTTP receiver (oteltap) on a free port, keeping every span and metric it receives.
    Lifecycle: ``async with``; its collecting tasks are cancelled and awaited on exit."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        self.port = 0
        self._receiver: OtelTapHttpProtobufReceiver | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> OtlpReceiver:
        for _ in range(5):
            # oteltap cannot bind port 0 and report it: take one the OS picks, retry if it was taken meanwhile.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            receiver = OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=self.port))
            try:
                await receiver.start()
            except OtelTapInitializationError:
                continue
            self._receiver = receiver
            break
        else:
            pytest.fail("no free port for the OTLP receiver")
        self._tasks = [
            asyncio.create_task(self._collect(receiver.stream_traces(), self.spans)),
            asyncio.create_task(self._collect(receiver.stream_metrics(), self.metrics)),
        ]
        await asyncio.sleep(0)  # wait-ok: one loop turn, so both streams are subscribed before any export
        return self

    @staticmethod
    async def _collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
        async for item in stream:
            into.append(item)

    @property
    def endpoint(self) -> str:
        """The base URL the OTLP exporters append ``/v1/traces`` and ``/v1/metrics`` to."""
        return f"http://127.0.0.1:{self.port}"

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._receiver is not None:
            await self._receiver.stop()


class GrpcOtlpReceiver:
    """An OTLP/gRPC receiver: a grpc server (free port) serving the collector's trace and metrics services
    from the OpenTelemetry protos, keeping every span and metric it receives. It runs on threads of its own:
    the gRPC exporter blocks the thread that flushes it, here the test's event loop. Lifecycle: ``async with``."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        self.port = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._pool)
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                for resource in request.resource_metrics:
                    for scope in resource.scope_metrics:
                        receiver.metrics.extend(scope.metrics)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)

    @property
    def endpoint(self) -> str:
        """The exporters' endpoint (an http:// scheme means a plaintext connection)."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> GrpcOtlpReceiver:
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._server.stop(grace=None).wait, 10)
        self._pool.shutdown(wait=True)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_otlp_export_reaches_a_real_receiver_as_one_connected_trace(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    async with OtlpReceiver() if protocol == "http/protobuf" else GrpcOtlpReceiver() as receiver:
        # The standard variables only: Salon names no endpoint of its own. Hosts started by Ray earlier get
        # them through the telemetry settings.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # hosts export within 200 ms (default: 5 s)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        engine = await make_engine(telemetry="off", num_hosts=1, num_shards=1)  # OTEL_TRACES_EXPORTER turns it on
        metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session = (await stub.CreateSession(cs_pb2.CreateSessionRequest())).session.session_id
            request = cs_pb2.SendTurnRequest(session_id=session, text=f"hello {CANARY}")
            events = [r.event async for r in stub.SendTurn(request, metadata=metadata)]
        assert events[-1].HasField("completed")
        wanted = {attrs.SPAN_GATEWAY_SEND_TURN, attrs.SPAN_TURN_PUBLISH, attrs.SPAN_HOST_TURN, attrs.SPAN_SESSION_TURN}

        def named() -> dict[str, Any]:
            return {s.name: s for s in receiver.spans if s.trace_id.hex() == CALLER_TRACE}

        async def all_there() -> bool:
            otel.force_flush()  # the gateway's spans and metrics; hosts export on their own within 200 ms
            spans = named()
            return wanted <= set(spans) and any(n.startswith("chat") for n in spans) and bool(receiver.metrics)

        await wait_for(all_there, what="the turn's spans and the gateway's metrics at the OTLP receiver")
        spans = named()
        server, producer = spans[attrs.SPAN_GATEWAY_SEND_TURN], spans[attrs.SPAN_TURN_PUBLISH]
        consumer, session_span = spans[attrs.SPAN_HOST_TURN], spans[attrs.SPAN_SESSION_TURN]
        model = next(s for n, s in spans.items() if n.startswith("chat"))
        kind = otlp_trace_pb2.Span.SpanKind
        assert (server.kind, server.parent_span_id.hex()) == (kind.SPAN_KIND_SERVER, CALLER_SPAN)
        assert (producer.kind, producer.parent_span_id) == (kind.SPAN_KIND_PRODUCER, server.span_id)
        assert (consumer.kind, consumer.parent_span_id) == (kind.SPAN_KIND_CONSUMER, producer.span_id)
        assert session_span.parent_span_id == consumer.span_id
        assert (model.kind, model.parent_span_id) == (kind.SPAN_KIND_CLIENT, session_span.span_id)
        model_attrs = {a.key: a.value for a in model.attributes}
        assert model_attrs[attrs.GEN_AI_PROVIDER].string_value == "scripted"
        assert model_attrs[attrs.GEN_AI_OUTPUT_TOKENS].int_value == 8
        assert all(CANARY not in s.SerializeToString().decode("latin-1") for s in receiver.spans)
        assert {m.name for m in receiver.metrics} >= {"salon.turns"}
        await engine.close()  # before the receiver stops: the last export must find it


@pytest.mark.parametrize("capture", [False, True], ids=["capture-off", "capture-on"])
async def test_json_logs_carry_the_turns_ids_and_no_content_unless_captured(
    make_engine: EngineFactory, tmp_path: Path, capture: bool
) -> None:
    model_server = EchoingErrors()
    await model_server.start()
    try:
        # The model first fails with an error echoing the prompt (some servers do), then answers with the
        # prompt's words; at DEBUG the SDK logs whole requests. None of it may reach the logs without capture.
        model_server.push(Reply.error(529, "overloaded_error"))
        logs, traces = tmp_path / "logs", tmp_path / "traces"
        engine = await make_engine(
            log_format="json",
            log_dir=str(logs),
            log_level="DEBUG",
            telemetry="jsonl",
            telemetry_dir=str(traces),
            capture_content=capture,
            model_provider="offline",
            model_chain="anthropic,offline",
            anthropic_api_key="test-key",
            anthropic_model="claude-test",
            anthropic_base_url=model_server.url,
            model_backoff_base_s=0.01,
            model_backoff_max_s=0.02,
            num_hosts=1,
            num_shards=1,
        )
        metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session = (await stub.CreateSession(cs_pb2.CreateSessionRequest())).session.session_id
            request = cs_pb2.SendTurnRequest(session_id=session, text=f"hello {CANARY}")
            events = [r.event async for r in stub.SendTurn(request, metadata=metadata)]
        assert CANARY in "".join(e.delta.text for e in events)  # the answer did carry it
        turn_id = events[0].turn_id

        def records() -> list[dict[str, Any]]:
            out = []
            for file in logs.glob("*.jsonl"):
                out += [json.loads(line) for line in file.read_text().splitlines() if line.endswith("}")]
            return out

        async def retry_logged() -> bool:
            return any(r.get("turn_id") == turn_id and "attempt 2" in r["message"] for r in records())

        await wait_for(retry_logged, what="the host's retry warning in the log files")
        await engine.close()  # every process flushes and closes its log file
        retry = next(r for r in records() if r.get("turn_id") == turn_id and "attempt 2" in r["message"])
        assert (retry["level"], retry["logger"]) == ("WARNING", "salon.providers.resilience")
        assert retry["process"].startswith("host-")
        assert (retry["trace_id"], retry["tenant_id"], retry["session_id"]) == (CALLER_TRACE, "default", session)
        model_span = next(s for s in otel.read_spans(traces) if s.trace_id == CALLER_TRACE and s.name == "chat")
        assert retry["span_id"] == model_span.span_id
        everything = "".join(f.read_text() for f in logs.glob("*.jsonl"))
        if capture:
            assert CANARY in everything  # documented: with capture on, the SDK's debug logs show requests
        else:
            assert CANARY not in everything
    finally:
        await model_server.close()


class EchoingErrors(FakeAnthropicServer):
    """A model server whose error messages quote the request's last message."""

    def error_body(self, reply: Reply) -> dict[str, Any]:
        body = super().error_body(reply)
        last = self.requests[-1].body["messages"][-1]["content"][0]["text"] if self.requests else ""
        body["error"]["message"] = f"overloaded while answering {last!r}"
        return body
