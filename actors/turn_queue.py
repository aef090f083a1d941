"""A session's line of turns and its double-texting policy: what a turn arriving while another runs does.

``enqueue`` waits its turn; ``reject`` is refused (SESSION_BUSY); ``interrupt`` stops the running turn and
goes next; ``rollback`` does the same and the stopped turn is recorded as rolled back (it leaves the
session's memory). A turn cancelled before it arrived is remembered and taken as cancelled on arrival.
"""

from __future__ import annotations

from collections.abc import Iterator

from salon.actors.running import RunningTurn
from salon.actors.state import RECENT_TURNS_KEPT

POLICIES = ("enqueue", "reject", "interrupt", "rollback")

INTERRUPTED = "interrupted by a newer turn"


class TurnQueue:
    """The turns of one session, running (the head) and waiting, in the order they run."""

    __slots__ = ("_cancelled_early", "_turns")

    def __init__(self) -> None:
        # A list, not a deque: a line is a turn or two long, and every live session holds one (an empty deque is
        # 600 bytes, an empty list 56).
        self._turns: list[RunningTurn] = []
        self._cancelled_early: set[str] | None = None
        """Made on first use: few sessions ever see a turn cancelled before it arrives."""

    def __len__(self) -> int:
        return len(self._turns)

    def __iter__(self) -> Iterator[RunningTurn]:
        return iter(self._turns)

    @property
    def head(self) -> RunningTurn:
        """The turn running (or about to run)."""
        return self._turns[0]

    def holds(self, turn_id: str) -> bool:
        """Whether ``turn_id`` is running or waiting."""
        return any(t.turn_id == turn_id for t in self._turns)

    def admit(self, running: RunningTurn, policy: str) -> int | None:
        """Place ``running`` in line under ``policy``; its queue position (turns ahead of it), or None when the
        policy refuses it. A turn already cancelled is never refused and interrupts nothing."""
        busy = bool(self._turns) and not running.cancel_reason
        if busy and policy == "reject":
            return None
        if busy and policy in ("interrupt", "rollback"):
            self._turns[0].stop(INTERRUPTED, rollback=policy == "rollback")
            self._turns.insert(1, running)
            return 1
        self._turns.append(running)
        return len(self._turns) - 1

    def popleft(self) -> RunningTurn:
        """Take the head out of line (it ended)."""
        return self._turns.pop(0)

    def clear(self) -> None:
        """Forget every turn in line."""
        self._turns.clear()

    def cancel(self, turn_id: str, reason: str) -> bool:
        """Stop ``turn_id`` if it is in line; whether it was."""
        for running in self._turns:
            if running.turn_id == turn_id:
                running.stop(reason)
                return True
        return False

    def cancel_on_arrival(self, turn_id: str) -> None:
        """Remember that ``turn_id``, not arrived yet, is cancelled (a bounded memory)."""
        if self._cancelled_early is None:
            self._cancelled_early = set()
        self._cancelled_early.add(turn_id)
        while len(self._cancelled_early) > RECENT_TURNS_KEPT:
            self._cancelled_early.pop()

    def cancelled_before_arrival(self, turn_id: str) -> bool:
        """Whether ``turn_id`` was cancelled before it arrived (forgotten once asked)."""
        if self._cancelled_early is not None and turn_id in self._cancelled_early:
            self._cancelled_early.discard(turn_id)
            return True
        return False
