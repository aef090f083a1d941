"""Tool answers kept while a turn's host was away (:class:`~salon.storage.tool_answers.StoredAnswer`): judged against
the turn's recorded calls, and turned into the control messages a host takes.

The gateway stores an answer only when the turn's progress records (the ledger: what a host taking the turn up
rebuilds it from) show a call that would take it now; :func:`judge` says so the way
:meth:`~salon.actors.tool_loop.ToolLoop.answer` would: ``not_found`` for an unknown call, an MCP call, a finished
turn or a passed wait deadline, ``approval_pending`` for a result whose call waits for its decision, ``duplicate``
for a call already answered. The host hands the stored answers to the waiting turn through the same checks
(:func:`as_message`), so one is taken at most once: the ledger then holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from salon.actors.control import DecideApproval, SubmitToolResult
from salon.actors.tool_calls import TurnCalls
from salon.storage import ProgressRecord, StoredAnswer

Judgement = Literal["take", "not_found", "approval_pending", "duplicate"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of an answer: its :data:`Judgement`, the wait deadline of a call that takes it, and for a
    decided call the verdict that holds (``approve`` or ``reject``)."""

    judgement: Judgement
    deadline_ns: int = 0
    holding: str = ""


def judge(
    records: Sequence[ProgressRecord], answer: StoredAnswer, decision: StoredAnswer | None, now_ns: int
) -> Verdict:
    """Whether the turn recorded by ``records`` (its progress records; none for a turn that finished or never
    waited) takes ``answer`` now; ``decision``: a decision stored for the same call (a result's call waiting for
    its approval takes it once approved)."""
    calls = TurnCalls()
    calls.restore(records)
    entry = calls.entries.get(answer.call_id)
    if answer.kind == "decision":
        if entry is None or not entry.requires_approval:
            return Verdict("not_found")
        if entry.approval is not None:
            return Verdict("duplicate", holding="approve" if entry.approval.approved else "reject")
    else:
        if entry is None or entry.server:
            return Verdict("not_found")
        if entry.answered:
            return Verdict("duplicate")
        if entry.requires_approval and entry.approval is None:
            if decision is None:
                return Verdict("approval_pending")
            if not decision.approve:
                return Verdict("duplicate")  # a rejection answers the call
    if entry.answered or (entry.wait_deadline_ns and entry.wait_deadline_ns <= now_ns):
        return Verdict("not_found")  # answered otherwise, or about to time out: the turn takes nothing more
    return Verdict("take", deadline_ns=entry.wait_deadline_ns)


def as_message(answer: StoredAnswer, incarnation: str = "") -> SubmitToolResult | DecideApproval:
    """The control message carrying ``answer`` to the turn."""
    if answer.kind == "decision":
        return DecideApproval(
            tenant_id=answer.tenant_id,
            session_id=answer.session_id,
            turn_id=answer.turn_id,
            call_id=answer.call_id,
            incarnation=incarnation,
            approve=answer.approve,
            reason=answer.reason,
            approver=answer.approver,
            decided_by=answer.decided_by,
        )
    return SubmitToolResult(
        tenant_id=answer.tenant_id,
        session_id=answer.session_id,
        turn_id=answer.turn_id,
        call_id=answer.call_id,
        incarnation=incarnation,
        content=answer.content,
        is_error=answer.is_error,
    )


def as_answer(message: SubmitToolResult | DecideApproval) -> StoredAnswer:
    """The answer a control message carries, to be stored."""
    if isinstance(message, DecideApproval):
        return StoredAnswer(
            message.tenant_id,
            message.session_id,
            message.turn_id,
            message.call_id,
            "decision",
            approve=message.approve,
            reason=message.reason,
            approver=message.approver,
            decided_by=message.decided_by,
        )
    return StoredAnswer(
        message.tenant_id,
        message.session_id,
        message.turn_id,
        message.call_id,
        "result",
        content=message.content,
        is_error=message.is_error,
    )


def in_taking_order(answers: Sequence[StoredAnswer]) -> list[StoredAnswer]:
    """Decisions before results (a result counts only once its call's approval is in), each in stored order."""
    return sorted(answers, key=lambda a: (a.kind != "decision", a.stored_at_ns))
