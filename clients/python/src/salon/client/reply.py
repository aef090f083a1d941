"""A whole turn, collected."""

from __future__ import annotations

from dataclasses import dataclass, field

from salon.client.events import TerminalEvent
from salon.v1 import turn_pb2


@dataclass
class Reply:
    """A whole turn, collected: the answer text and how the turn ended."""

    turn_id: str
    text: str
    events: list[turn_pb2.TurnEvent] = field(default_factory=list)
    time_to_first_token_s: float | None = None
    outcome: str = ""
    """``completed``, ``error`` or ``cancelled``."""
    final: TerminalEvent | None = None
    """The typed terminal event (:class:`~salon.client.Completed`, ``Failed`` or ``Cancelled``)."""
    session_id: str = ""

    @property
    def usage(self) -> turn_pb2.Usage | None:
        """The turn's usage event, if it had one."""
        for event in self.events:
            if event.HasField("usage"):
                return event.usage
        return None

    @property
    def error(self) -> turn_pb2.TurnError | None:
        """The turn's error event, if it failed."""
        for event in self.events:
            if event.HasField("error"):
                return event.error
        return None
