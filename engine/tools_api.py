"""The API side of tools: checking what callers send (tool definitions and settings at CreateSession and
SendTurn, tool results and approval decisions), and routing results and decisions to the host that owns the
turn's session.

Definitions are converted and checked by :mod:`salon.actors.wire` (the same conversion the hosts use) against the MCP
servers the deployment and the caller's tenant configure. A result or decision goes, like a cancel, as a typed
control message (:mod:`salon.actors.control`) to the host owning the session's shard; the session checks it against
the turn's own calls, appends it to its ledger and answers. The host's answer becomes the RPC's: the same
NOT_FOUND for an unknown call, a finished turn and another tenant's session; ``duplicate`` for a call already
answered. While no host answers for the session, or its next host has yet to take the turn up, the answer is
judged against the turn's records and kept (:mod:`salon.engine.kept_answers`) for the turn to take when it waits
again: accepted all the same, or refused as a host would; UNAVAILABLE with a retry hint only when neither the
host nor the ledger and the answer store can be reached (or when the gateway keeps no answers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping

from salon.actors import ToolPolicy, ToolSelection, check_servers, policy_from_proto, selection_from_proto, shard_for
from salon.actors.control import ControlError, ControlReply, DecideApproval, SubmitToolResult
from salon.actors.stored_answers import as_answer
from salon.actors.tools import (
    DEFAULT_MAX_RESULT_BYTES,
    EMPTY_TOOL_RESULT,
    INVALID_VERDICT,
    check_call_id,
    check_decision,
    check_result_size,
)
from salon.engine.kept_answers import AnswerKeeper
from salon.storage import FailedPrecondition, InvalidArgument, NotFound, Reason, Unavailable, require_id
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2

CALL_NOT_FOUND = Reason.TOOL_CALL_NOT_FOUND
"""The call is unknown, its turn finished, or the session is another tenant's (one answer for all)."""
APPROVAL_PENDING = Reason.TOOL_APPROVAL_PENDING
"""A result was submitted for a call that still waits for its approval."""
TURN_RESUMING = Reason.TURN_RESUMING
"""The turn's host stopped and its next activation has not taken the turn up yet: retry shortly."""

ControlSender = Callable[[int, Mapping[str, str]], Awaitable[dict[str, str]]]
"""Sends a control request to the host owning a shard and returns its JSON reply (the turn publisher's
``control``)."""


def check_tool_set(tool_set: session_pb2.ToolSet, configured: Collection[str]) -> ToolSelection:
    """A session's or turn's tools as sent: definitions checked (``INVALID_TOOL`` naming the tool, never its
    schema), every MCP server named configured for the deployment or the caller's tenant."""
    selection = selection_from_proto(tool_set)
    check_servers(selection, configured)
    return selection


def check_tool_settings(settings: session_pb2.ToolSettings) -> None:
    """A session's or turn's tool settings: within range (``INVALID_TOOL_SETTINGS``)."""
    policy_from_proto(ToolPolicy(), settings)


def check_submit(request: cs_pb2.SubmitToolResultRequest, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> None:
    """A SubmitToolResult request (or the Converse variant): ids well formed, an outcome, within the size."""
    require_id(request.session_id, "session_id")
    require_id(request.turn_id, "turn_id")
    check_call_id(request.call_id)
    outcome = request.WhichOneof("outcome")
    if outcome is None:
        raise InvalidArgument("set result or error", reason=EMPTY_TOOL_RESULT)
    check_result_size(getattr(request, outcome), max_result_bytes, outcome)


def check_decide(request: cs_pb2.DecideApprovalRequest) -> None:
    """A DecideApproval request (or the Converse variant): ids well formed, a verdict, bounded text."""
    require_id(request.session_id, "session_id")
    require_id(request.turn_id, "turn_id")
    check_call_id(request.call_id)
    if request.verdict not in (cs_pb2.APPROVAL_VERDICT_APPROVE, cs_pb2.APPROVAL_VERDICT_REJECT):
        raise InvalidArgument("verdict must be APPROVE or REJECT", reason=INVALID_VERDICT)
    check_decision(request.reason, request.approver)


class ToolAnswers:
    """Routes tool results and approval decisions to the hosts that own their sessions, and keeps those no host
    takes (with a :class:`~salon.engine.kept_answers.AnswerKeeper`) for the turn to take when it waits again."""

    def __init__(
        self,
        control: ControlSender,
        num_shards: int,
        *,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        keeper: AnswerKeeper | None = None,
    ) -> None:
        self._control = control
        self._num_shards = num_shards
        self.max_result_bytes = max_result_bytes
        self._keeper = keeper
        """None: an answer no host takes is refused as unavailable, to be sent again."""

    async def submit(
        self, tenant_id: str, incarnation: str, request: cs_pb2.SubmitToolResultRequest
    ) -> cs_pb2.SubmitToolResultResponse:
        """Hand a (checked) result to the turn's session; whether it was a duplicate."""
        is_error = request.WhichOneof("outcome") == "error"
        message = SubmitToolResult(
            tenant_id=tenant_id,
            session_id=request.session_id,
            turn_id=request.turn_id,
            call_id=request.call_id,
            incarnation=incarnation,
            content=request.error if is_error else request.result,
            is_error=is_error,
        )
        reply = await self._answer(message)
        return cs_pb2.SubmitToolResultResponse(duplicate=reply.result == "duplicate")

    async def decide(
        self, tenant_id: str, incarnation: str, decided_by: str, request: cs_pb2.DecideApprovalRequest
    ) -> cs_pb2.DecideApprovalResponse:
        """Hand a (checked) decision to the turn's session; whether it was a duplicate, and the verdict that
        holds."""
        message = DecideApproval(
            tenant_id=tenant_id,
            session_id=request.session_id,
            turn_id=request.turn_id,
            call_id=request.call_id,
            incarnation=incarnation,
            approve=request.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE,
            reason=request.reason,
            approver=request.approver,
            decided_by=decided_by,
        )
        reply = await self._answer(message)
        approved = reply.verdict == "approve" if reply.verdict else message.approve
        verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if approved else cs_pb2.APPROVAL_VERDICT_REJECT
        return cs_pb2.DecideApprovalResponse(duplicate=reply.result == "duplicate", verdict=verdict)

    async def _answer(self, message: SubmitToolResult | DecideApproval) -> ControlReply:
        """The answer's fate: taken by the host, or (with no host to take it) kept; raises the RPC's error for a
        refusal."""
        keeper = self._keeper
        shard = shard_for(message.tenant_id, message.session_id, self._num_shards)
        try:
            reply = await self._ask(shard, message)
        except Unavailable:
            if keeper is None:
                raise
            reply = None  # no host answered for the session
        if reply is not None and (keeper is None or reply.result in _JUDGED):
            _raise_for(reply)
            return reply
        assert keeper is not None
        kept = await keeper.keep(as_answer(message), message.incarnation)
        _raise_for(kept)
        if kept.result != "accepted":
            return kept
        # A host that took the turn up and read the kept answers before this one was stored learns of it here.
        try:
            told = await self._ask(shard, message)
        except Unavailable:
            return kept
        if told.result == "duplicate" and told.verdict and told.verdict != kept.verdict:
            return told  # another answer reached the turn first
        return kept

    async def _ask(self, shard: int, message: SubmitToolResult | DecideApproval) -> ControlReply:
        """The host's reply; :class:`Unavailable` when no host answered or its reply cannot be read."""
        raw = await self._control(shard, message.to_dict())
        try:
            return ControlReply.from_dict(raw)
        except ControlError:
            raise Unavailable(
                "the session's host gave an answer this gateway cannot read",
                reason=Reason.HOST_UNAVAILABLE,
                retry_after_s=1.0,
            ) from None


_JUDGED = frozenset({"accepted", "duplicate", "not_found", "unknown_session", "approval_pending"})
"""Host replies that judge the answer; any other (the turn is being taken up, the host could not record it or
failed) leaves it to be kept."""


def _raise_for(reply: ControlReply) -> None:
    """The RPC's error for a host's answer that is not a success."""
    if reply.result in ("accepted", "duplicate"):
        return
    if reply.result in ("not_found", "unknown_session"):
        raise NotFound("tool call not found", reason=CALL_NOT_FOUND)
    if reply.result == "approval_pending":
        raise FailedPrecondition("the call waits for its approval; decide it first", reason=APPROVAL_PENDING)
    if reply.result == "resuming":
        raise Unavailable(
            "the turn is being taken up by its session's next activation; retry shortly",
            reason=TURN_RESUMING,
            retry_after_s=1.0,
        )
    reason = Reason.from_wire(reply.reason) or Reason.HOST_UNAVAILABLE
    raise Unavailable("the session's host could not take the answer", reason=reason, retry_after_s=1.0)


__all__ = [
    "APPROVAL_PENDING",
    "CALL_NOT_FOUND",
    "TURN_RESUMING",
    "ToolAnswers",
    "check_decide",
    "check_submit",
    "check_tool_set",
    "check_tool_settings",
]
