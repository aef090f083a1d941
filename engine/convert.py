"""Between storage records and API messages, and the opaque page tokens of paged RPCs."""

from __future__ import annotations

import base64
import binascii

from google.protobuf.timestamp_pb2 import Timestamp

from salon.actors import TurnContext, decision_to_proto
from salon.actors.usage import result_usage
from salon.actors.wire import SOURCES, usage_to_proto
from salon.storage import InvalidArgument, ToolCallEntry, TurnRecord
from salon.storage.reasons import Reason
from salon.v1 import turn_pb2

_STATUSES = {
    "completed": turn_pb2.TURN_STATUS_COMPLETED,
    "failed": turn_pb2.TURN_STATUS_FAILED,
    "partial": turn_pb2.TURN_STATUS_PARTIAL,
    "cancelled": turn_pb2.TURN_STATUS_CANCELLED,
}
_STOP_REASONS = {
    "end_turn": turn_pb2.STOP_REASON_END_TURN,
    "max_tokens": turn_pb2.STOP_REASON_MAX_TOKENS,
    "stop_sequence": turn_pb2.STOP_REASON_STOP_SEQUENCE,
    "tool_use": turn_pb2.STOP_REASON_TOOL_USE,
    "refusal": turn_pb2.STOP_REASON_REFUSAL,
}


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def tool_call_to_proto(entry: ToolCallEntry) -> turn_pb2.ToolCallRecord:
    """One tool call of a recorded turn as the API shows it (the whole result, as the model saw it)."""
    record = turn_pb2.ToolCallRecord(
        call_id=entry.call_id,
        tool=entry.tool,
        arguments_json=entry.arguments_json,
        mcp_server=entry.server,
        round=entry.round,
        result=entry.result,
        is_error=entry.is_error,
        source=SOURCES.get(entry.source, turn_pb2.TOOL_RESULT_SOURCE_UNSPECIFIED),
        call_tokens=entry.call_tokens,
        result_tokens=entry.result_tokens,
    )
    if entry.called_at_ns:
        record.call_time.CopyFrom(_timestamp(entry.called_at_ns))
    if entry.result_at_ns:
        record.result_time.CopyFrom(_timestamp(entry.result_at_ns))
    approval = entry.approval
    if approval is not None:
        record.approval.CopyFrom(
            turn_pb2.ToolApprovalRecord(
                approved=approval.approved,
                reason=approval.reason,
                approver=approval.approver,
                decided_by=approval.decided_by,
                decide_time=_timestamp(approval.decided_at_ns),
            )
        )
    return record


def record_to_proto(record: TurnRecord) -> turn_pb2.TurnRecord:
    """A transcript row as the API shows it."""
    return turn_pb2.TurnRecord(
        turn_id=record.turn_id,
        user_text=record.user_text,
        reply_text=record.reply_text,
        status=_STATUSES.get(record.status, turn_pb2.TURN_STATUS_UNSPECIFIED),
        stop_reason=_STOP_REASONS.get(record.stop_reason, turn_pb2.STOP_REASON_UNSPECIFIED),
        usage=usage_to_proto(result_usage(record), _rounds(record)),
        create_time=_timestamp(record.enqueued_at_ns or record.started_at_ns),
        complete_time=_timestamp(record.completed_at_ns),
        context=context_to_proto(TurnContext.from_json(record.context_json)),
        guardrails=[decision_to_proto(d) for d in record.all_guardrails()],
        tool_calls=[tool_call_to_proto(c) for c in record.tool_calls],
        model_rounds=_rounds(record),
        not_remembered=record.do_not_remember,
    )


def _rounds(record: TurnRecord) -> int:
    # Records written before tools existed say 0, as the usage event a replay of them sends.
    return record.model_rounds


def context_to_proto(context: TurnContext) -> turn_pb2.TurnContext:
    """A turn's explainable context as the API shows it (the summary's version, not its text)."""
    return turn_pb2.TurnContext(
        window=[
            turn_pb2.ContextMessage(
                turn_id=w.turn_id, turn_index=w.turn_index, role=w.role, tokens=w.tokens, tool_calls=w.tool_calls
            )
            for w in context.window
        ],
        summary_version=context.summary.version,
        summary_tokens=context.summary_tokens,
        passages=[
            turn_pb2.ContextPassage(
                citation=turn_pb2.Citation(
                    source=p.source,
                    document_id=p.document_id,
                    chunk_id=p.chunk_id,
                    score=p.score,
                    table_version=p.table_version,
                    title=p.title,
                ),
                tokens=p.tokens,
                turn_index=p.turn_index,
            )
            for p in context.passages
        ],
        system_tokens=context.system_tokens,
        message_tokens=context.message_tokens,
        total_tokens=context.total_tokens,
        retrieval_error_reason=context.retrieval_error_reason,
    )


def encode_index_token(index: int) -> str:
    """An opaque page token naming the last turn index of a page."""
    return base64.urlsafe_b64encode(f"t:{index}".encode()).decode()


def decode_index_token(token: str) -> int:
    """The turn index in a page token ("" is the start); :class:`InvalidArgument` if it is not one of ours."""
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        index = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is not valid", reason=Reason.BAD_PAGE_TOKEN) from None
    if kind != "t" or index < 0:
        raise InvalidArgument("page_token is not valid", reason=Reason.BAD_PAGE_TOKEN)
    return index
