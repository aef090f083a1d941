"""Server-Sent Events: turn events framed for the wire, and a decoder for Python callers (tests, benchmarks).

A turn's stream, as the bridge writes it::

    retry: 1000

    id: 1
    event: accepted
    data: {"sessionId":"…","turnId":"…","seq":"1","time":"…","accepted":{"traceId":"…"}}

    id: 2
    event: delta
    data: {"sessionId":"…","turnId":"…","seq":"2","time":"…","delta":{"text":"Hello "}}

    : keepalive

``id`` is the event's per-turn sequence number, so a client that reconnects with ``Last-Event-ID`` gets the rest
of the turn, each event once. ``event`` names the event's kind (the ``TurnEvent.kind`` field set: accepted,
citations, delta, usage, completed, error, cancelled, guardrail, tool_call, approval_required, approval_decided,
tool_result); ``data`` is the whole ``TurnEvent`` in protobuf's JSON mapping (so 64-bit numbers such as ``seq``
are strings). A failure after the stream opened comes as ``event: stream_error`` (no id) with the JSON error body
of :mod:`salon.bridge.errors`; the stream then ends and the client resumes. Comment lines keep idle connections open.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from salon.v1 import turn_pb2

RETRY_MS = 1000
"""What EventSource waits before reconnecting after a drop."""
PREAMBLE = f"retry: {RETRY_MS}\n\n".encode()
KEEPALIVE = b": keepalive\n\n"
STREAM_ERROR = "stream_error"


def to_json(message: Any) -> dict[str, Any]:
    """A protobuf message in protobuf's JSON mapping (lowerCamelCase names, enums by name)."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def _data(value: Any) -> str:
    # Compact JSON escapes every CR and LF, so the data is always one SSE line.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_frame(event: turn_pb2.TurnEvent) -> bytes:
    """One turn event as an SSE message."""
    kind = event.WhichOneof("kind") or "unknown"
    return f"id: {event.seq}\nevent: {kind}\ndata: {_data(to_json(event))}\n\n".encode()


def error_frame(body: dict[str, Any]) -> bytes:
    """A failure after the stream opened (the stream ends after it)."""
    return f"event: {STREAM_ERROR}\ndata: {_data(body)}\n\n".encode()


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One decoded SSE message."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        """The data parsed as JSON."""
        return json.loads(self.data)


class SseDecoder:
    """Decodes an SSE byte stream as the HTML standard says (``feed`` bytes, get whole messages)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_event_id: str | None = None
        self._pending_cr = False
        # Network chunks may split a character's bytes: decode incrementally.
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk: bytes | str) -> Iterator[SseMessage]:
        """The messages completed by ``chunk``."""
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            message = self._line(line)
            if message is not None:
                yield message

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseMessage | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:
            self._event, self._id = "", None
            return None
        message = SseMessage(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data, self._id = "", [], None
        return message
