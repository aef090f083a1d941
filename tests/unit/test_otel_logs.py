"""Structured logs: the ids a record carries inside a turn's spans, JSON and text output, content withheld
(exception messages, exceptions as arguments, the model SDKs' debug logs) unless capture is on; and the
standard OTEL_* variables that pick the exporter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from salon import otel
from salon.engine import Config
from salon.otel import attributes as attrs
from salon.storage.errors import InvalidArgument

CANARY = "canary-93be1f-not-in-logs"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
TURN_IDS = {attrs.TURN_ID: "turn-1", attrs.SESSION_ID: "s1", attrs.TENANT_ID: "acme"}


class Captured:
    """Records formatted by Salon's formatters, through a logger of its own (pytest's handlers stay apart)."""

    def __init__(self, fmt: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(otel.JsonFormatter("gateway") if fmt == "json" else otel.TextFormatter())
        self.handler.addFilter(otel.ContentFilter())
        self.logger = logging.getLogger(f"salon.test.{fmt}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)

    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line]

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    captured = Captured("json")
    yield captured
    captured.close()


@pytest.fixture
def text_logs() -> Iterator[Captured]:
    captured = Captured("text")
    yield captured
    captured.close()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    otel.setup(otel.TelemetrySettings(), exporter=exporter)
    yield exporter
    otel.shutdown()


def _failing_with_content() -> BaseException:
    try:
        try:
            raise ValueError(f"model said {CANARY}")
        except ValueError as inner:
            raise RuntimeError(f"turn failed on {CANARY}") from inner
    except RuntimeError as exc:
        return exc


def test_a_record_inside_a_turn_span_carries_trace_span_and_turn_ids(
    spans: InMemorySpanExporter, json_logs: Captured
) -> None:
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, {"traceparent": TRACEPARENT})
    with otel.span(attrs.SPAN_SESSION_TURN, parent=consumer.context(), attributes=TURN_IDS), otel.span("chat"):
        json_logs.logger.warning("model retry %d", 2)
    json_logs.logger.warning("between turns")
    consumer.end()
    inside, outside = json_logs.records()
    chat = next(s for s in spans.get_finished_spans() if s.name == "chat")
    assert chat.context is not None
    assert inside["trace_id"] == CALLER_TRACE
    assert inside["span_id"] == format(chat.context.span_id, "016x")
    assert (inside["tenant_id"], inside["session_id"], inside["turn_id"]) == ("acme", "s1", "turn-1")
    assert (inside["level"], inside["logger"], inside["message"]) == ("WARNING", "salon.test.json", "model retry 2")
    assert inside["timestamp"].endswith("Z") and inside["process"] == "gateway"
    assert not {"trace_id", "turn_id", "session_id"} & set(outside)


def test_the_gateway_call_names_its_server_span_and_the_turn_once_known(
    spans: InMemorySpanExporter, json_logs: Captured
) -> None:
    with otel.server_span(attrs.SPAN_GATEWAY_SEND_TURN, [("traceparent", TRACEPARENT)]) as server:
        json_logs.logger.info("before publish")
        with otel.producer_span(attrs.SPAN_TURN_PUBLISH, server.headers(), TURN_IDS):
            pass
        json_logs.logger.info("relaying")
    before, relaying = json_logs.records()
    server_id = format(server.span.get_span_context().span_id, "016x")
    assert (before["trace_id"], before["span_id"]) == (CALLER_TRACE, server_id)
    assert "turn_id" not in before
    assert (relaying["span_id"], relaying["turn_id"], relaying["tenant_id"]) == (server_id, "turn-1", "acme")


def test_without_telemetry_records_still_carry_the_callers_trace_and_the_turn() -> None:
    captured = Captured("json")
    consumer = otel.consumer_span(attrs.SPAN_HOST_TURN, {"traceparent": TRACEPARENT})
    try:
        with otel.span(attrs.SPAN_SESSION_TURN, parent=consumer.context()), otel.span("inner", attributes=TURN_IDS):
            captured.logger.warning("x")
    finally:
        consumer.end()
        captured.close()
    [record] = captured.records()
    assert (record["trace_id"], record["turn_id"]) == (CALLER_TRACE, "turn-1")


def test_exception_messages_are_withheld_without_capture(json_logs: Captured, text_logs: Captured) -> None:
    exc = _failing_with_content()
    for captured in (json_logs, text_logs):
        captured.logger.error("turn failed", exc_info=exc)
        captured.logger.warning("provider error: %s (%s)", exc, "MODEL_ERROR")
    assert CANARY not in json_logs.text() + text_logs.text()
    first, second = json_logs.records()
    assert first["exception"]["type"] == "RuntimeError"
    traceback = first["exception"]["traceback"]
    assert "ValueError (message withheld)" in traceback and "direct cause" in traceback
    assert "_failing_with_content" in traceback  # the frames stay: they are code, not content
    assert second["message"] == "provider error: RuntimeError (MODEL_ERROR)"
    assert "RuntimeError (message withheld)" in text_logs.text()


def test_with_capture_on_exception_messages_are_logged(json_logs: Captured) -> None:
    otel.setup(otel.TelemetrySettings(capture_content=True))
    try:
        json_logs.logger.error("turn failed", exc_info=_failing_with_content())
    finally:
        otel.shutdown()
    assert CANARY in json_logs.records()[0]["exception"]["traceback"]


def test_model_sdk_debug_logs_are_dropped_without_capture() -> None:
    content_filter = otel.ContentFilter()

    def passes(name: str, level: int) -> bool:
        return content_filter.filter(logging.makeLogRecord({"name": name, "levelno": level, "msg": CANARY}))

    assert not passes("anthropic._base_client", logging.DEBUG)
    assert not passes("httpcore.http11", logging.DEBUG)
    assert passes("anthropic._base_client", logging.WARNING)
    assert passes("salon.actors.session", logging.DEBUG)
    otel.setup(otel.TelemetrySettings(capture_content=True))
    try:
        assert passes("anthropic._base_client", logging.DEBUG)
    finally:
        otel.shutdown()


def test_setup_logging_replaces_its_own_handler_and_sets_the_level() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        otel.setup_logging("DEBUG", "json", process="p")
        otel.setup_logging("WARNING", "text")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0].formatter, otel.TextFormatter)
        assert root.level == logging.WARNING
        with pytest.raises(ValueError, match="log format"):
            otel.setup_logging("INFO", "xml")
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)


def test_log_settings_reach_every_process_through_telemetry_settings() -> None:
    config = Config.load(env={"SALON_LOG_FORMAT": "json", "SALON_LOG_DIR": "/logs"})
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "HOME": "/root"}
    settings = otel.TelemetrySettings.from_config(config, env=env)
    assert (settings.log_format, settings.log_dir) == ("json", "/logs")
    assert settings.otel_env == (("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),)
    assert "collector" not in repr(settings)  # OTLP headers may hold credentials
    with pytest.raises(InvalidArgument, match="log_format"):
        Config.load(env={"SALON_LOG_FORMAT": "xml"})
    with pytest.raises(InvalidArgument, match="log_level"):
        Config.load(env={"SALON_LOG_LEVEL": "loud"})
    assert Config.load(env={"SALON_LOG_LEVEL": "debug"}).log_level == "debug"  # any case, as logging takes it


@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("off", {}, "off"),
        ("off", {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ("off", {"OTEL_TRACES_EXPORTER": "console,otlp"}, "otlp"),
        ("off", {"OTEL_TRACES_EXPORTER": "none"}, "off"),
        ("jsonl", {"OTEL_TRACES_EXPORTER": "otlp"}, "jsonl"),
        ("otlp", {"OTEL_SDK_DISABLED": "true"}, "off"),
    ],
)
def test_the_standard_variables_pick_the_span_exporter(mode: str, env: dict[str, str], expected: str) -> None:
    assert otel.resolve_mode(mode, env) == expected


def test_the_otlp_protocol_follows_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    assert otel.otlp_protocol() == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert otel.otlp_protocol("TRACES") == "grpc"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    assert otel.otlp_protocol("METRICS") == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    assert otel.otlp_protocol("TRACES") == "http/protobuf"  # not supported: the default instead


@pytest.mark.parametrize(
    ("sampler", "arg", "kept"),
    [("", "", 20), ("always_off", "", 0), ("traceidratio", "0", 0), ("parentbased_traceidratio", "1", 20)],
)
def test_the_standard_sampler_variables_decide_which_traces_are_kept(
    monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str, kept: int
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    exporter = InMemorySpanExporter()
    otel.setup(otel.TelemetrySettings(), exporter=exporter)
    try:
        for _ in range(20):
            with otel.span("root"):
                pass
    finally:
        otel.shutdown()
    assert len(exporter.get_finished_spans()) == kept
