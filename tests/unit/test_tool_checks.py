"""Tool definitions, calls and results: each problem has a reason, a definition's schema is never echoed, and a
bad call becomes an error the model sees instead of running."""

from __future__ import annotations

import json

import pytest
from google.protobuf.duration_pb2 import Duration

from salon.actors.events import ApprovalDecided, ApprovalRequired, ToolCallEvent, ToolResultEvent, TurnEvent
from salon.actors.model import ToolCall, ToolResult, ToolSpec
from salon.actors.tools import (
    DEFAULT_WAIT_TIMEOUT_S,
    EMPTY_TOOL_RESULT,
    INVALID_APPROVER,
    INVALID_CALL_ID,
    INVALID_TOOL,
    INVALID_VERDICT,
    MAX_ARGUMENTS_BYTES,
    MAX_SCHEMA_BYTES,
    MAX_TOOLS,
    PREVIEW_BYTES,
    TOO_MANY_TOOLS,
    TOOL_RESULT_TOO_LARGE,
    UNKNOWN_MCP_SERVER,
    InvalidTool,
    ToolPolicy,
    ToolSelection,
    bounded_result,
    check_decision,
    check_result_size,
    check_servers,
    check_tool,
    check_tools,
    offered_tools,
    preview,
    rejection,
    schema_problem,
    validate_call,
)
from salon.actors.wire import (
    SOURCES,
    event_from_proto,
    event_to_proto,
    policy_from_proto,
    selection_from_proto,
    selection_to_proto,
)
from salon.engine.tools_api import check_decide, check_submit, check_tool_set
from salon.storage.errors import InvalidArgument
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2

CANARY = "CANARYzq7x"
"""Put inside every bad definition: it must never appear in an error message."""

ORDER_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}, "count": {"type": "integer"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
)


def _spec(name: str = "lookup_order", schema: str = ORDER_SCHEMA, **more: object) -> ToolSpec:
    return ToolSpec(name=name, description="Finds an order", input_schema_json=schema, **more)  # type: ignore[arg-type]


def _refused(spec: ToolSpec) -> InvalidTool:
    with pytest.raises(InvalidTool) as info:
        check_tool(spec)
    assert info.value.reason == INVALID_TOOL
    assert CANARY not in info.value.message
    return info.value


def test_a_good_definition_passes() -> None:
    check_tools([_spec(), _spec("a-b_C9", '{"type": "object"}'), _spec("x" * 64)])


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "dot.name", "naïve", "new\nline", f"{CANARY}!"])
def test_bad_names_are_refused_without_repeating_them(name: str) -> None:
    error = _refused(_spec(name))
    assert "tool #1" in error.message
    assert name not in error.message or not name


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (f'{{"type": "object", "description": "{CANARY}"', "not valid JSON"),
        (f'["{CANARY}"]', "must be a JSON object"),
        (json.dumps({"type": "string", "description": CANARY}), '"type": "object"'),
        (json.dumps({"properties": {CANARY: {}}}), '"type": "object"'),
        (json.dumps({"type": "object", "properties": {CANARY: {"type": "strin"}}}), "not a valid JSON Schema"),
        (json.dumps({"type": "object", "required": CANARY}), "'required' keyword"),
        (json.dumps({"type": "object", "properties": {"a": {"$ref": f"https://{CANARY}/x"}}}), "another document"),
        (json.dumps({"type": "object", "description": CANARY * (MAX_SCHEMA_BYTES // 10)}), "over"),
        ('{"type": "object", "x": ' + "[" * 200 + "]" * 200 + "}", "deeper"),
        ('{"type": "object", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "over"),
    ],
)
def test_bad_schemas_are_refused_naming_the_tool_not_the_schema(schema: str, words: str) -> None:
    error = _refused(_spec(schema=schema))
    # By position: the message repeats nothing of the request, not even a valid name.
    assert "tool #1" in error.message and "lookup_order" not in error.message
    assert words in error.message


def test_a_deeply_nested_schema_within_the_size_limit_is_refused_not_crashing() -> None:
    deep = '{"type": "object", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    assert schema_problem(deep)


def test_description_size_and_duplicates_and_count() -> None:
    assert "description" in _refused(ToolSpec("t", description=CANARY * 1000)).message
    with pytest.raises(InvalidTool, match="defined twice"):
        check_tools([_spec(), _spec()])
    with pytest.raises(InvalidArgument) as info:
        check_tools([_spec(f"t{i}") for i in range(MAX_TOOLS + 1)])
    assert info.value.reason == TOO_MANY_TOOLS


def test_an_mcp_tool_may_leave_its_schema_to_the_server() -> None:
    check_tool(ToolSpec("search", input_schema_json="", server="docs"))
    with pytest.raises(InvalidTool):
        check_tool(ToolSpec("search", input_schema_json="", server="bad server"))
    check_tool(ToolSpec("no_arguments", input_schema_json="", server=""))  # a client tool: {"type": "object"}


def _call(arguments: str, name: str = "lookup_order") -> ToolCall:
    return ToolCall(call_id="call_1", name=name, arguments_json=arguments)


def test_a_matching_call_runs() -> None:
    assert validate_call(_call('{"order_id": "42", "count": 2}'), _spec()) is None
    assert validate_call(_call(""), _spec("t", '{"type": "object"}')) is None


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ('{"order_id": 42}', "at 'order_id'"),
        ('{"order_id": "4x2"}', "does not match"),
        ("{}", "'order_id' is a required property"),
        ('{"order_id": "1", "extra": true}', "Additional properties"),
        ('{"order_id": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"order_id": "' + "1" * MAX_ARGUMENTS_BYTES + '"}', "over"),
    ],
)
def test_a_bad_call_becomes_an_error_for_the_model(arguments: str, words: str) -> None:
    result = validate_call(_call(arguments), _spec())
    assert isinstance(result, ToolResult)
    assert result.is_error and result.call_id == "call_1" and result.name == "lookup_order"
    assert words in result.content
    assert len(result.content) < 1000


def test_a_call_to_a_tool_not_offered_lists_the_offered_ones() -> None:
    result = validate_call(_call("{}", name="delete_everything"), None, offered=["b", "a"])
    assert result is not None and result.is_error
    assert "'delete_everything'" in result.content and "a, b" in result.content


def test_result_sizes() -> None:
    check_result_size("é" * 50, max_bytes=100)
    with pytest.raises(InvalidArgument) as info:
        check_result_size("é" * 51 + CANARY, max_bytes=100)
    assert info.value.reason == TOOL_RESULT_TOO_LARGE and CANARY not in info.value.message
    fits = ToolResult("c", "t", "x" * 10)
    assert bounded_result(fits, 10) is fits
    cut = bounded_result(ToolResult("c", "t", CANARY * 10), 10)
    assert cut.is_error and CANARY not in cut.content and "100 bytes" in cut.content
    with pytest.raises(InvalidArgument):
        check_decision("r" * 5000, "")
    with pytest.raises(InvalidArgument):
        check_decision("", "a" * 129)
    check_decision("fine", "alice@example")


def test_preview_cuts_at_a_character_boundary() -> None:
    assert preview("short") == ("short", 5)
    text, size = preview("é" * PREVIEW_BYTES)
    assert size == 2 * PREVIEW_BYTES
    assert text == "é" * (PREVIEW_BYTES // 2)
    odd, _ = preview("a" + "é" * PREVIEW_BYTES)
    assert len(odd.encode()) <= PREVIEW_BYTES and odd.startswith("aé")


def test_rejection_carries_the_reason() -> None:
    result = rejection(_call("{}"), "refunds need a manager")
    assert result.is_error and "refunds need a manager" in result.content


def test_policy_overrides() -> None:
    policy = ToolPolicy()
    assert policy_from_proto(policy, None) == policy
    assert policy_from_proto(policy, session_pb2.ToolSettings()) == policy
    settings = session_pb2.ToolSettings(wait_timeout=Duration(seconds=30), max_model_rounds=3)
    changed = policy_from_proto(policy, settings)
    assert (changed.wait_timeout_s, changed.max_model_rounds) == (30.0, 3)
    assert policy.wait_timeout_s == DEFAULT_WAIT_TIMEOUT_S
    assert policy.overridden(wait_timeout_s=5.0) == ToolPolicy(wait_timeout_s=5.0)
    for bad in (
        session_pb2.ToolSettings(wait_timeout=Duration(seconds=-1)),
        session_pb2.ToolSettings(wait_timeout=Duration(seconds=10**7)),
        session_pb2.ToolSettings(max_model_rounds=1000),
    ):
        with pytest.raises(InvalidArgument):
            policy_from_proto(policy, bad)


def test_selection_round_trips_through_the_api() -> None:
    tool_set = session_pb2.ToolSet(
        tools=[
            session_pb2.Tool(name="lookup_order", description="d", input_schema_json=ORDER_SCHEMA),
            session_pb2.Tool(name="refund", requires_approval=True),
            session_pb2.Tool(name="search", mcp_server="docs"),
        ],
        mcp_servers=["crm", "crm"],
    )
    selection = selection_from_proto(tool_set)
    assert [s.name for s in selection.tools] == ["lookup_order", "refund", "search"]
    assert selection.tools[1].input_schema_json == '{"type": "object"}' and selection.tools[1].requires_approval
    assert selection.tools[2].input_schema_json == "" and selection.tools[2].server == "docs"
    assert selection.mcp_servers == ("crm",)
    assert selection_from_proto(selection_to_proto(selection)) == selection
    assert not selection_from_proto(session_pb2.ToolSet())
    with pytest.raises(InvalidArgument) as info:
        selection_from_proto(session_pb2.ToolSet(mcp_servers=[CANARY + " x"]))
    assert info.value.reason == UNKNOWN_MCP_SERVER and CANARY not in info.value.message
    unchecked = session_pb2.ToolSet(tools=[session_pb2.Tool(name="x", input_schema_json=CANARY)])
    assert selection_from_proto(unchecked, check=False).tools[0].input_schema_json == CANARY  # the host's reading
    with pytest.raises(InvalidTool) as refused:
        check_tool_set(unchecked, ())
    assert CANARY not in refused.value.message and "tool #1" in refused.value.message
    with pytest.raises(InvalidArgument) as unknown:
        check_tool_set(session_pb2.ToolSet(mcp_servers=["docs"]), ("crm",))
    assert unknown.value.reason == UNKNOWN_MCP_SERVER


def test_servers_must_be_configured() -> None:
    selection = ToolSelection(tools=(ToolSpec("search", input_schema_json="", server="docs"),), mcp_servers=("crm",))
    check_servers(selection, {"docs", "crm"})
    with pytest.raises(InvalidArgument) as info:
        check_servers(selection, {"crm"})
    assert info.value.reason == UNKNOWN_MCP_SERVER


def test_offered_tools_merge_the_session_and_its_servers() -> None:
    own = _spec("lookup_order")
    pinned = ToolSpec("search", input_schema_json="", requires_approval=True, server="docs")
    gone = ToolSpec("missing", input_schema_json="", server="docs")
    listed = {
        "docs": [ToolSpec("search", "Searches", '{"type": "object", "required": ["q"]}', server="docs")],
        "crm": [
            ToolSpec("lookup_order", "clashes", '{"type": "object"}', server="crm"),
            ToolSpec("customer", "A customer", '{"type": "object"}', server="crm"),
        ],
    }
    selection = ToolSelection(tools=(own, pinned, gone), mcp_servers=("crm", "down"))
    offered, left_out = offered_tools(selection, listed)
    assert [t.name for t in offered] == ["lookup_order", "search", "customer"]
    assert offered[0] is own
    assert (
        offered[1].requires_approval and offered[1].description == "Searches" and '"q"' in offered[1].input_schema_json
    )
    assert set(left_out) == {"missing", "lookup_order"}
    capped, _ = offered_tools(ToolSelection(mcp_servers=("crm",)), listed, max_tools=1)
    assert [t.name for t in capped] == ["lookup_order"]


# The API's side: requests answering calls, and the event payloads of a turn's tool calls.


def _submit(**fields: object) -> cs_pb2.SubmitToolResultRequest:
    values: dict[str, object] = {"session_id": "s1", "turn_id": "t1", "call_id": "toolu_01", "result": "ok"}
    values.update(fields)
    return cs_pb2.SubmitToolResultRequest(**values)  # type: ignore[arg-type]


def test_submitted_results_are_checked() -> None:
    check_submit(_submit())
    check_submit(_submit(error="the database is down"))
    cases = [
        (cs_pb2.SubmitToolResultRequest(session_id="s1", turn_id="t1", call_id="c"), EMPTY_TOOL_RESULT),
        (_submit(call_id=""), INVALID_CALL_ID),
        (_submit(call_id="c\n" + CANARY), INVALID_CALL_ID),
        (_submit(call_id="c" * 257), INVALID_CALL_ID),
        (_submit(session_id=CANARY + "!"), "INVALID_SESSION_ID"),
        (_submit(turn_id=""), "INVALID_TURN_ID"),
        (_submit(result=CANARY * 10_000), TOOL_RESULT_TOO_LARGE),
    ]
    for request, reason in cases:
        with pytest.raises(InvalidArgument) as info:
            check_submit(request, max_result_bytes=64 * 1024)
        assert info.value.reason == reason and CANARY not in info.value.message


def test_approval_decisions_are_checked() -> None:
    good = cs_pb2.DecideApprovalRequest(
        session_id="s1", turn_id="t1", call_id="c1", verdict=cs_pb2.APPROVAL_VERDICT_REJECT, reason="no", approver="ann"
    )
    check_decide(good)
    for change, reason in [
        ({"verdict": cs_pb2.APPROVAL_VERDICT_UNSPECIFIED}, INVALID_VERDICT),
        ({"verdict": 99}, INVALID_VERDICT),
        ({"approver": "a\u202eb"}, INVALID_APPROVER),
        ({"reason": "r" * 5000}, TOOL_RESULT_TOO_LARGE),
    ]:
        request = cs_pb2.DecideApprovalRequest()
        request.CopyFrom(good)
        for name, value in change.items():
            setattr(request, name, value)
        with pytest.raises(InvalidArgument) as info:
            check_decide(request)
        assert info.value.reason == reason


def test_event_payloads_convert_to_the_api_and_back() -> None:
    bodies = [
        ToolCallEvent("c1", "refund", '{"order_id": "42"}', True, "crm", 2, 1_700_000_000_500_000_000),
        ToolCallEvent("c2", "lookup", "{}", round=1),
        ApprovalRequired("c1", "refund", '{"order_id": "42"}', "crm", 2, 1_700_000_000_000_000_000),
        ApprovalDecided("c1", False, "too much", "ann"),
        ToolResultEvent("c1", "refund", True, "rejected", "A person rejected", 17, 1.25),
    ]
    for seq, body in enumerate(bodies, 1):
        event = TurnEvent("s1", "t1", seq, 1_700_000_000_000_000_000 + seq, body)
        proto = event_to_proto(event)
        assert proto.WhichOneof("kind") == event.kind
        assert event_from_proto(proto) == event
    call = event_to_proto(TurnEvent("s1", "t1", 1, 1, bodies[0])).tool_call
    assert call.wait_deadline.ToNanoseconds() == 1_700_000_000_500_000_000 and call.requires_approval
    assert not event_to_proto(TurnEvent("s1", "t1", 1, 1, bodies[1])).tool_call.HasField("wait_deadline")
    result = event_to_proto(TurnEvent("s1", "t1", 1, 1, bodies[4])).tool_result
    assert result.source == turn_pb2.TOOL_RESULT_SOURCE_REJECTED and result.duration.ToMilliseconds() == 1250
    assert set(SOURCES) == {"client", "mcp", "rejected", "timeout", "invalid_call", "cancelled"}
    assert preview("é" * PREVIEW_BYTES) == ("é" * (PREVIEW_BYTES // 2), 2 * PREVIEW_BYTES)
