"""Spans as JSON lines: one file per process (no two processes append to one file), read back together.

Each line is one finished span: names, ids as hex, kind, times in ns since the epoch, status, attributes,
events and links. ``read_spans`` reads a file or every ``*.jsonl`` file of a directory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span read back from a JSONL file."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    service: str = ""
    process: str = ""

    @property
    def duration_ms(self) -> float:
        """How long the span lasted."""
        return max(self.end_ns - self.start_ns, 0) / 1e6

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpanRecord:
        """Parse one line's object."""
        return cls(
            name=str(data["name"]),
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_span_id=str(data.get("parent_span_id") or ""),
            kind=str(data.get("kind", "INTERNAL")),
            start_ns=int(data["start_ns"]),
            end_ns=int(data["end_ns"]),
            status=str(data.get("status", "UNSET")),
            attributes=dict(data.get("attributes") or {}),
            events=list(data.get("events") or []),
            links=list(data.get("links") or []),
            service=str(data.get("service", "")),
            process=str(data.get("process", "")),
        )


def _value(value: Any) -> Any:
    # Attribute values are primitives or sequences of them; tuples become lists.
    return list(value) if isinstance(value, (tuple, list)) else value


def _attributes(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _value(v) for k, v in (values or {}).items()}


def span_to_json(span: ReadableSpan, process: str = "") -> dict[str, Any]:
    """The JSON object of a finished span."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else "",
        "kind": span.kind.name,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "status": span.status.status_code.name,
        "attributes": _attributes(span.attributes),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": _attributes(e.attributes)} for e in span.events
        ],
        "links": [
            {"trace_id": format(link.context.trace_id, "032x"), "span_id": format(link.context.span_id, "016x")}
            for link in span.links
        ],
        "service": str(span.resource.attributes.get("service.name", "")),
        "process": process,
    }


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans to ``path``, one JSON object per line (thread-safe; one writer per file)."""

    def __init__(self, path: str | Path, process: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = process
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` and flush, so a reader sees whole lines only."""
        lines = "".join(json.dumps(span_to_json(s, self._process), default=str) + "\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Lines are flushed as they are written."""
        return True


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(path.glob("*.jsonl"))
    elif path.exists():
        yield path


def read_spans(path: str | Path) -> list[SpanRecord]:
    """Every span in a JSONL file, or in every ``*.jsonl`` file of a directory. A torn last line (a process
    still writing) is skipped."""
    spans: list[SpanRecord] = []
    for file in _files(Path(path)):
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    spans.append(SpanRecord.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue
    return spans
