"""Span files: the JSONL exporter's round trip, and `salon trace` rendering a recorded file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salon import otel
from salon.engine.cli import main
from salon.otel import attributes as attrs


def test_jsonl_exporter_round_trip(tmp_path: Path) -> None:
    otel.setup(otel.TelemetrySettings(mode="jsonl", directory=str(tmp_path)), process="gateway")
    try:
        with (
            otel.span("outer", attributes={attrs.TURN_ID: "t1", "n": 3, "l": ["a", "b"]}) as outer,
            otel.span("inner", kind=otel.SpanKind.CLIENT),
        ):
            pass
    finally:
        otel.shutdown()  # flushes the batch processor
    [file] = list(tmp_path.glob("gateway-*.jsonl"))
    spans = {s.name: s for s in otel.read_spans(tmp_path)}
    assert otel.read_spans(file) == list(otel.read_spans(tmp_path))
    o, i = spans["outer"], spans["inner"]
    assert o.trace_id == i.trace_id == format(outer.get_span_context().trace_id, "032x")
    assert i.parent_span_id == o.span_id and not o.parent_span_id
    assert (o.kind, i.kind, o.process) == ("INTERNAL", "CLIENT", "gateway")
    assert o.attributes == {attrs.TURN_ID: "t1", "n": 3, "l": ["a", "b"]}
    assert o.start_ns <= i.start_ns <= i.end_ns <= o.end_ns


def _line(  # noqa: PLR0917 - one recorded span per call, positionally for a readable table
    name: str, span_id: str, parent: str, kind: str, start_ms: int, end_ms: int, **attributes: object
) -> str:
    return json.dumps(
        {
            "name": name,
            "trace_id": "ab" * 16,
            "span_id": span_id,
            "parent_span_id": parent,
            "kind": kind,
            "start_ns": start_ms * 1_000_000,
            "end_ns": end_ms * 1_000_000,
            "attributes": attributes,
            "process": kind.lower()[:4],
        }
    )


RECORDED = [
    _line("salon.gateway.SendTurn", "01" * 8, "ff" * 8, "SERVER", 0, 100),
    _line("salon.turns publish", "02" * 8, "01" * 8, "PRODUCER", 1, 3, **{attrs.TURN_ID: "turn-1"}),
    _line("salon.host.turn", "03" * 8, "02" * 8, "CONSUMER", 5, 95, **{attrs.QUEUE_WAIT_MS: 2.5}),
    _line("chat m", "04" * 8, "03" * 8, "CLIENT", 6, 90, **{attrs.GEN_AI_OUTPUT_TOKENS: 8, attrs.TTFT_MS: 12.0}),
    '{"torn line',
]


def test_salon_trace_prints_the_waterfall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gateway-1.jsonl").write_text("\n".join(RECORDED[:2]) + "\n")
    (tmp_path / "host-0-2.jsonl").write_text("\n".join(RECORDED[2:]) + "\n")
    assert main(["trace", "turn-1", "--file", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("trace " + "ab" * 16) and "total 100.0 ms" in out[0]
    names = [line.split()[0] for line in out[1:]]
    depths = [len(line) - len(line.lstrip()) for line in out[1:]]
    assert names == ["salon.gateway.SendTurn", "salon.turns", "salon.host.turn", "chat"]
    assert depths == [0, 2, 4, 6]
    assert "100.0 ms" in out[1] and "server" in out[1]
    assert "queue_wait_ms=2.5" in out[3]
    assert "output_tokens=8" in out[4] and "time_to_first_token_ms=12.0" in out[4]
    assert main(["trace", "--last", "--file", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == out[1:]


def test_salon_trace_of_an_unknown_turn_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gateway-1.jsonl").write_text("\n".join(RECORDED[:2]) + "\n")
    assert main(["trace", "nope", "--file", str(tmp_path)]) == 1
    assert "no spans" in capsys.readouterr().err
    assert main(["trace", "--file", str(tmp_path)]) == 2
