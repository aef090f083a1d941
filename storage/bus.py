"""The turn bus's record: a turn as it travels from the gateway to the host that runs it.

The envelope's metadata rides in message headers beside the serialized request, so any bus that carries
bytes and string headers can carry it; the JetStream bus is :mod:`salon.storage.jetstream.bus`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from salon.storage.errors import Internal, Unavailable
from salon.storage.reasons import Reason
from salon.v1 import conversation_service_pb2 as cs_pb2

H_MSG_ID = "Nats-Msg-Id"
"""Deduplication id: JetStream drops a second turn with the same id within its dedupe window."""
H_TENANT = "Salon-Tenant"
H_TURN = "Salon-Turn-Id"
H_ENQUEUED = "Salon-Enqueued-Ns"
H_INCARNATION = "Salon-Session-Incarnation"
H_DEADLINE = "Salon-Deadline-Ns"
H_GUARDRAILS = "Salon-Guardrails"
"""The tenant's guardrail settings for the turn (``GuardrailSettings.to_header``; absent: the defaults)."""
TRACE_HEADERS = ("traceparent", "tracestate")
TERMINAL_KINDS = frozenset({"completed", "error", "cancelled"})
"""Event kinds that end a turn's event stream."""
REFUSALS = frozenset({Reason.TOO_MANY_TURNS, Reason.SESSION_BUSY})
"""Reasons of an error event that refused a turn before it ran: the turn did not run, and sending it again under
the same idempotency key may run it."""


class EventsLost(Unavailable):
    """Some of a turn's events are gone from the events stream (they outlived its retention, or a store lost
    them), so the stream cannot continue without a gap; the turn's record can, once it exists."""

    reason = Reason.EVENTS_LOST


class Delivered(Protocol):
    """A message as the bus hands it over: payload and headers."""

    @property
    def data(self) -> bytes:
        """The payload."""
        ...

    @property
    def headers(self) -> Mapping[str, str] | None:
        """The headers (None when the message has none)."""
        ...


@dataclass(frozen=True, slots=True)
class TurnEnvelope:
    """A turn as it travels on the bus."""

    tenant_id: str
    turn_id: str
    request: cs_pb2.SendTurnRequest
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    enqueued_at_ns: int = 0
    incarnation: str = ""
    """Which incarnation of the session id the turn was sent to (a deleted and re-created session is a
    new incarnation, and must not inherit the old one's memory)."""
    deadline_ns: int = 0
    """The caller's gRPC deadline as wall-clock ns (0: none): the host cancels the turn when it passes."""
    guardrails: str = ""
    """The tenant's guardrail settings, encoded by the gateway (opaque here; the session host decodes them)."""

    def headers(self) -> dict[str, str]:
        """Message headers carrying the envelope's metadata and trace context."""
        headers = {
            H_MSG_ID: f"{self.tenant_id}.{self.request.session_id}.{self.turn_id}",
            H_TENANT: self.tenant_id,
            H_TURN: self.turn_id,
            H_ENQUEUED: str(self.enqueued_at_ns or time.time_ns()),
            H_INCARNATION: self.incarnation,
            H_DEADLINE: str(self.deadline_ns),
            **{k: v for k, v in self.trace_headers.items() if k in TRACE_HEADERS},
        }
        if self.guardrails:
            headers[H_GUARDRAILS] = self.guardrails
        return headers

    @classmethod
    def from_msg(cls, msg: Delivered) -> TurnEnvelope:
        """Decode a turn message; raise :class:`Internal` if it is not one."""
        headers = msg.headers or {}
        try:
            request = cs_pb2.SendTurnRequest.FromString(msg.data)
            return cls(
                tenant_id=headers[H_TENANT],
                turn_id=headers[H_TURN],
                request=request,
                trace_headers={k: headers[k] for k in TRACE_HEADERS if k in headers},
                enqueued_at_ns=int(headers.get(H_ENQUEUED, "0")),
                incarnation=headers.get(H_INCARNATION, ""),
                deadline_ns=int(headers.get(H_DEADLINE, "0") or 0),
                guardrails=headers.get(H_GUARDRAILS, ""),
            )
        except Exception as exc:
            raise Internal("malformed turn message on the bus", reason="MALFORMED_TURN") from exc
