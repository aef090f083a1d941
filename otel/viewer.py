"""The trace viewer behind ``salon trace``: a turn's spans, from span files, as a waterfall.

Spans of one process carry their parent's id; spans of a trace arrive from several processes (gateway,
hosts, batch writer) in separate files and are joined here by trace id. A batch write holds many turns, so it
belongs to no turn's trace; it names the traces it wrote (``salon.batch.trace_ids``) and is shown with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from salon.otel import attributes as attrs
from salon.otel.jsonl import SpanRecord

BAR_WIDTH = 40

_SHOWN = (
    attrs.QUEUE_WAIT_MS,
    attrs.TTFT_MS,
    attrs.GEN_AI_PROVIDER,
    attrs.GEN_AI_RESPONSE_MODEL,
    attrs.GEN_AI_INPUT_TOKENS,
    attrs.GEN_AI_OUTPUT_TOKENS,
    attrs.GEN_AI_FINISH_REASONS,
    attrs.TURN_STATUS,
    attrs.BATCH_ROWS,
    "error.type",
)
"""Attributes worth a glance in the waterfall (never content)."""


def find_trace(spans: Iterable[SpanRecord], *, turn_id: str = "", last: bool = False) -> list[SpanRecord]:
    """The spans of the trace of ``turn_id`` (or of the most recent turn when ``last``), plus batch writes
    that wrote it; empty when there is none."""
    spans = list(spans)
    turns = [s for s in spans if s.attributes.get(attrs.TURN_ID)]
    if turn_id:
        turns = [s for s in turns if s.attributes.get(attrs.TURN_ID) == turn_id]
    if not turns:
        return []
    trace_id = max(turns, key=lambda s: s.start_ns).trace_id if last else turns[0].trace_id
    return [s for s in spans if s.trace_id == trace_id or trace_id in (s.attributes.get(attrs.BATCH_TRACE_IDS) or ())]


def _label(span: SpanRecord) -> str:
    shown = [f"{k.rsplit('.', 1)[-1]}={_short(span.attributes[k])}" for k in _SHOWN if k in span.attributes]
    return " ".join(shown)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def render_trace(spans: Iterable[SpanRecord], width: int = BAR_WIDTH) -> str:
    """A waterfall of ``spans`` (one trace): one line per span, children under their parent in start order,
    with kind, process, duration and a bar placed on the trace's time line."""
    spans = sorted(spans, key=lambda s: s.start_ns)
    if not spans:
        return "no spans\n"
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    roots: list[SpanRecord] = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in ids:
            children[s.parent_span_id].append(s)
        else:
            roots.append(s)
    start = spans[0].start_ns
    end = max(s.end_ns for s in spans)
    scale = width / max(end - start, 1)
    trace_ids = sorted({s.trace_id for s in roots if not s.attributes.get(attrs.BATCH_TRACE_IDS)})
    lines = [f"trace {', '.join(trace_ids) or spans[0].trace_id}  total {(end - start) / 1e6:.1f} ms"]
    rows: list[tuple[str, SpanRecord]] = []

    def walk(span: SpanRecord, depth: int) -> None:
        rows.append(("  " * depth + span.name, span))
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    name_width = max(len(name) for name, _ in rows)
    for name, span in rows:
        offset = int((span.start_ns - start) * scale)
        length = max(int((span.end_ns - span.start_ns) * scale), 1)
        bar = " " * offset + "█" * min(length, width - offset if width > offset else 1)
        kind = span.kind.lower()
        error = " ERROR" if span.status == "ERROR" else ""
        lines.append(
            f"{name:<{name_width}}  {kind:<8} {span.process:<10} {span.duration_ms:>9.1f} ms  |{bar:<{width}}|"
            f"{error} {_label(span)}".rstrip()
        )
    return "\n".join(lines) + "\n"
