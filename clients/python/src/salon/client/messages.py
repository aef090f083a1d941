"""The API's request messages the client builds in more than one place."""

from __future__ import annotations

from collections.abc import Mapping

from salon.client.policies import Disconnect, DoubleTexting, disconnect_value, double_texting_value
from salon.client.tools import Toolbox, tool_settings
from salon.v1 import conversation_service_pb2 as cs_pb2


def turn_request(
    session_id: str,
    text: str,
    idempotency_key: str,
    *,
    double_texting: DoubleTexting | None = None,
    disconnect_policy: Disconnect | None = None,
    metadata: Mapping[str, str] | None = None,
    tools: Toolbox | None = None,
    tool_wait_timeout_s: float | None = None,
    max_model_rounds: int | None = None,
    do_not_remember: bool = False,
) -> cs_pb2.SendTurnRequest:
    """The ``SendTurnRequest`` of a new turn (``tools``: sent to replace the session's for this turn;
    ``do_not_remember``: the turn is never written into long-term memory)."""
    return cs_pb2.SendTurnRequest(
        session_id=session_id,
        text=text,
        idempotency_key=idempotency_key,
        double_texting=double_texting_value(double_texting),
        disconnect_policy=disconnect_value(disconnect_policy),
        metadata=dict(metadata or {}),
        tools=tools.to_proto() if tools is not None else None,
        tool_settings=tool_settings(tool_wait_timeout_s, max_model_rounds),
        do_not_remember=do_not_remember,
    )
