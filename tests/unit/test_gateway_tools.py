"""The gateway's side of tools that needs no bus: how long a turn's stream waits once the turn waits for a tool."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from salon.engine.config import Config
from salon.engine.gateway import Gateway
from salon.v1 import turn_pb2


def _gateway() -> Gateway:
    async def control(shard: int, request: Any) -> dict[str, str]:
        return {"result": "accepted"}

    publisher: Any = SimpleNamespace(control=control)
    none: Any = None
    return Gateway(Config(turn_timeout_s=300.0), publisher, none, none, none)


def _stamp(seconds_from_now: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return stamp


def test_a_stream_waits_past_the_turn_timeout_while_the_turn_waits_for_a_tool() -> None:
    extend = _gateway()._tool_wait(None)
    assert extend is not None
    call = turn_pb2.TurnEvent(seq=2, tool_call=turn_pb2.ToolCall(call_id="c", wait_deadline=_stamp(900)))
    more = extend(call)
    assert more is not None and 1190 < more <= 1200, "until the wait's deadline, then the turn timeout"
    approval = turn_pb2.TurnEvent(seq=3, approval_required=turn_pb2.ApprovalRequired(wait_deadline=_stamp(60)))
    assert extend(approval) is not None
    mcp = turn_pb2.TurnEvent(seq=4, tool_call=turn_pb2.ToolCall(call_id="m", mcp_server="docs"))
    assert extend(mcp) is None, "the engine's own calls are no wait"
    assert extend(turn_pb2.TurnEvent(seq=5, delta=turn_pb2.TokenDelta(text="x"))) is None
    assert _gateway()._tool_wait(30.0) is None, "a caller's own deadline is kept"
