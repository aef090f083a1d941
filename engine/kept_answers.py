"""Tool answers kept by the gateway while no host serves the turn's session.

A turn waiting for its tools outlives its host: its message goes to the next host, which takes it up from the
ledger. When a result or decision arrives while no host answers for the session (or the next one has yet to take
the turn up), :class:`AnswerKeeper` judges it against the turn's progress records in the ledger, as the host would
(:func:`~salon.actors.stored_answers.judge`), and stores one the turn would take in the tool answer store; the
turn takes it from there when it waits again. When the ledger cannot be read the answer is refused as
unavailable: whether the call would take it cannot be known.
"""

from __future__ import annotations

import time

from salon.actors.control import ControlReply
from salon.actors.state import SessionState
from salon.actors.stored_answers import judge
from salon.storage import AnswerStore, Journal, StoredAnswer

GRACE_S = 60.0
"""How long a stored answer outlives its call's wait deadline (clocks of gateways and hosts differ a little)."""
UNBOUNDED_TTL_S = 25 * 3600.0
"""Time-to-live of an answer whose call has no wait deadline (past the longest wait a turn may have)."""


def verdict_of(answer: StoredAnswer) -> str:
    """A decision's verdict as a control reply gives it (empty for a result)."""
    if answer.kind != "decision":
        return ""
    return "approve" if answer.approve else "reject"


class AnswerKeeper:
    """Judges and stores the answers no host took."""

    def __init__(self, store: AnswerStore, journal: Journal) -> None:
        self._store = store
        self._journal = journal

    async def keep(self, answer: StoredAnswer, incarnation: str) -> ControlReply:
        """Store ``answer`` when its turn, as recorded, would take it now: ``accepted`` (stored), ``duplicate``
        (the call has its answer, with the verdict that holds for a decision), ``not_found`` or
        ``approval_pending`` (refused as a host refuses). Raises
        :class:`~salon.storage.errors.Unavailable` when the ledger or the store cannot be reached."""
        loaded = await self._journal.peek(answer.tenant_id, answer.session_id, incarnation)
        records = SessionState.restore(loaded, incarnation, 1).unfinished.get(answer.turn_id, [])
        decision = None
        if answer.kind == "result":
            decision = await self._store.get(
                answer.tenant_id, answer.session_id, answer.turn_id, answer.call_id, "decision"
            )
        now = time.time_ns()
        verdict = judge(records, answer, decision, now)
        if verdict.judgement != "take":
            return ControlReply(verdict.judgement, verdict=verdict.holding)
        ttl_s = (verdict.deadline_ns - now) / 1e9 + GRACE_S if verdict.deadline_ns else UNBOUNDED_TTL_S
        held, stored = await self._store.put(answer, ttl_s)
        if not stored:
            return ControlReply("duplicate", verdict=verdict_of(held))  # kept earlier, here or by another gateway
        return ControlReply("accepted", verdict=verdict_of(answer))
