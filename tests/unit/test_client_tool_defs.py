"""Client tools as the application defines them: JSON Schema from signatures and docstrings, running a call
(sync and async functions, conversions, results, errors) and the API messages sent. No sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import threading
from typing import Annotated, Any, Literal, TypedDict

import pytest

from salon.client import Tool, Toolbox, ToolCall, ToolError, mcp_tool, tool
from salon.client.schema import convert_arguments, describe_function, type_schema
from salon.client.tools import encode_result, tool_settings
from salon.v1 import session_pb2


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Address(TypedDict):
    street: str
    city: str


def call_of(name: str, arguments: dict[str, Any] | str, **fields: Any) -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(session_id="s", turn_id="t", seq=2, call_id=fields.pop("call_id", "c1"), tool=name,
                    arguments_json=text, **fields)  # fmt: skip


# --- schemas ------------------------------------------------------------------------------------------------


def test_a_documented_function_gives_description_and_schema() -> None:
    def lookup_order(order_id: str, limit: int = 3, *, verbose: bool = False) -> dict[str, str]:
        """Find an order by its id.

        Use it when the customer names an order.

        Args:
            order_id: The order's id,
                like A-1001.
            limit (int): How many lines to show.

        Returns:
            The order.
        """
        return {}

    described = describe_function(lookup_order)
    assert described.description == "Find an order by its id.\n\nUse it when the customer names an order."
    assert described.schema == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "The order's id, like A-1001."},
            "limit": {"type": "integer", "description": "How many lines to show.", "default": 3},
            "verbose": {"type": "boolean", "default": False},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }


def test_numpy_and_sphinx_docstrings_describe_parameters_too() -> None:
    def numpy(a: int, b: str) -> None:
        """NumPy style.

        Parameters
        ----------
        a : int
            The first.
        b : str
            The second,
            on two lines.
        """

    def sphinx(a: int, b: str) -> None:
        """Sphinx style.

        :param a: the first
        :param str b: the second
        :returns: nothing
        """

    n = describe_function(numpy)
    assert n.description == "NumPy style."
    assert n.schema["properties"]["a"]["description"] == "The first."
    assert n.schema["properties"]["b"]["description"] == "The second, on two lines."
    s = describe_function(sphinx)
    assert s.description == "Sphinx style."
    assert [s.schema["properties"][k]["description"] for k in ("a", "b")] == ["the first", "the second"]


def test_types_map_to_json_schema() -> None:
    assert type_schema(float) == {"type": "number"}
    assert type_schema(list[int]) == {"type": "array", "items": {"type": "integer"}}
    assert type_schema(set[str]) == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert type_schema(tuple[int, str]) == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert type_schema(dict[str, float]) == {"type": "object", "additionalProperties": {"type": "number"}}
    assert type_schema(Literal["a", "b"]) == {"enum": ["a", "b"], "type": "string"}
    assert type_schema(Size) == {"enum": ["s", "l"], "type": "string"}
    assert type_schema(int | None) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert type_schema(int | str) == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert type_schema(Annotated[str, "a note"]) == {"type": "string", "description": "a note"}
    assert type_schema(Any) == {}
    assert type_schema(Point) == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert type_schema(Address)["required"] == ["street", "city"]


def test_what_cannot_be_described_is_refused_at_registration() -> None:
    class Opaque:
        pass

    def takes_opaque(thing: Opaque) -> None:
        """Takes a thing."""

    with pytest.raises(TypeError, match=r"parameter 'thing'.*pass schema= explicitly"):
        tool(takes_opaque)

    def positional(a: int, /) -> None:
        """Positional only."""

    with pytest.raises(TypeError, match="positional-only"):
        tool(positional)

    with pytest.raises(TypeError, match="string keys"):
        type_schema(dict[int, str])
    # An explicit schema makes any function a tool.
    explicit = tool(takes_opaque, schema={"type": "object", "properties": {"thing": {}}})
    assert explicit.input_schema == {"type": "object", "properties": {"thing": {}}}


def test_unannotated_and_open_ended_functions() -> None:
    def loose(a, b=2, **rest):  # type: ignore[no-untyped-def]
        return a

    schema = describe_function(loose).schema
    assert schema == {"type": "object", "properties": {"a": {}, "b": {"default": 2}}, "required": ["a"]}


def test_a_parameter_typed_tool_call_receives_the_call_and_is_not_offered() -> None:
    seen: list[ToolCall] = []

    @tool
    def whoami(call: ToolCall, greeting: str) -> str:
        """Says who called."""
        seen.append(call)
        return f"{greeting} {call.call_id}"

    assert whoami.input_schema is not None and list(whoami.input_schema["properties"]) == ["greeting"]
    outcome = asyncio.run(whoami.run(call_of("whoami", {"greeting": "hi"}, call_id="c9")))
    assert outcome.result == "hi c9" and seen[0].turn_id == "t"


def test_arguments_are_converted_to_the_declared_types() -> None:
    def f(size: Size, at: Point, pair: tuple[int, int], *, tags: set[str], maybe: Size | None, ratio: float) -> None:
        pass

    hints = describe_function(f).hints
    converted = convert_arguments(
        {"size": "l", "at": {"x": 1}, "pair": [1, 2], "tags": ["a", "a"], "maybe": None, "ratio": 2, "extra": 1},
        hints,
    )
    assert converted == {
        "size": Size.LARGE,
        "at": Point(1, 0),
        "pair": (1, 2),
        "tags": {"a"},
        "maybe": None,
        "ratio": 2.0,
        "extra": 1,
    }
    assert isinstance(converted["ratio"], float)


# --- running calls ------------------------------------------------------------------------------------------


def test_tool_decorator_forms_and_proto() -> None:
    @tool
    def plain(x: int) -> int:
        """Doubles x."""
        return x * 2

    @tool(name="renamed", description="Custom.", requires_approval=True)
    async def fancy(x: int) -> int:
        return x

    assert plain.name == "plain" and plain.description == "Doubles x." and plain(4) == 8
    assert fancy.name == "renamed" and fancy.requires_approval
    proto = fancy.to_proto()
    assert proto.name == "renamed" and proto.description == "Custom." and proto.requires_approval
    assert json.loads(proto.input_schema_json)["required"] == ["x"] and proto.mcp_server == ""

    remote = mcp_tool("lookup_order", "orders", requires_approval=True)
    assert remote.to_proto() == session_pb2.Tool(name="lookup_order", mcp_server="orders", requires_approval=True)
    assert not remote.runs_on_client and plain.runs_on_client


async def test_sync_functions_run_in_a_worker_thread_async_ones_on_the_loop() -> None:
    threads: dict[str, str] = {}

    def blocking() -> str:
        threads["sync"] = threading.current_thread().name
        return "s"

    async def awaiting() -> str:
        threads["async"] = threading.current_thread().name
        return "a"

    here = threading.current_thread().name
    assert (await tool(blocking).run(call_of("blocking", {}))).result == "s"
    assert (await tool(awaiting).run(call_of("awaiting", {}))).result == "a"
    assert threads["async"] == here and threads["sync"] != here


async def test_results_are_text_or_json_and_errors_carry_only_the_message() -> None:
    assert encode_result("plain text") == "plain text"
    assert encode_result(None) == ""
    assert json.loads(encode_result({"a": [1, 2], "p": Point(1, 2), "s": Size.SMALL})) == {
        "a": [1, 2],
        "p": {"x": 1, "y": 2},
        "s": "s",
    }

    def broken(order_id: str) -> str:
        raise KeyError(f"no order {order_id}")

    def refusing() -> str:
        raise ToolError("Orders older than a year are archived.")

    outcome = await tool(broken).run(call_of("broken", {"order_id": "A-1"}))
    assert outcome.result is None and outcome.error == "KeyError: 'no order A-1'"
    assert "Traceback" not in outcome.error and "File " not in outcome.error
    assert (await tool(refusing).run(call_of("refusing", {}))).error == "Orders older than a year are archived."
    # Arguments the function cannot take are an error the model reads, not a crash.
    wrong = await tool(broken).run(call_of("broken", {"nope": 1}))
    assert wrong.error is not None and wrong.error.startswith("TypeError:")


def test_toolbox_holds_tools_by_name_and_builds_the_tool_set() -> None:
    def a(x: int) -> int:
        """A."""
        return x

    box = Toolbox([a, mcp_tool("b", "srv")], mcp_servers=["docs"])
    assert "a" in box and len(box) == 2 and box.get("b") is not None
    proto = box.to_proto()
    assert [t.name for t in proto.tools] == ["a", "b"] and list(proto.mcp_servers) == ["docs"]
    assert box.runner_for(call_of("a", {})) is box.get("a")
    assert box.runner_for(call_of("b", {})) is None  # an MCP tool: the engine runs it
    assert box.runner_for(call_of("a", {}, mcp_server="srv")) is None
    assert box.runner_for(call_of("zzz", {})) is None
    with pytest.raises(ValueError, match="two tools"):
        Toolbox([a, a])
    assert Toolbox.of(None) is None and Toolbox.of(box) is box
    assert Toolbox.of([], []) is not None  # given and empty: "no tools" is sent


def test_tool_settings() -> None:
    assert tool_settings() is None
    settings = tool_settings(wait_timeout_s=90, max_model_rounds=4)
    assert settings is not None and settings.wait_timeout.seconds == 90 and settings.max_model_rounds == 4
    with pytest.raises(ValueError):
        tool_settings(wait_timeout_s=0)


def test_tool_object_without_function_cannot_be_called() -> None:
    declared = Tool(name="manual", input_schema={"type": "object"})
    with pytest.raises(TypeError):
        declared()
    outcome = asyncio.run(declared.run(call_of("manual", {})))
    assert outcome.error is not None


# --- the tool events ----------------------------------------------------------------------------------------


def test_tool_events_convert_to_their_dataclasses() -> None:
    from datetime import UTC, datetime

    from google.protobuf.duration_pb2 import Duration
    from google.protobuf.timestamp_pb2 import Timestamp

    from salon.client import ApprovalDecided, ApprovalRequired, ToolResult, event_from_proto
    from salon.v1 import turn_pb2

    deadline = Timestamp()
    deadline.FromDatetime(datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    common = {"session_id": "s", "turn_id": "t", "seq": 3}
    tc = turn_pb2.TurnEvent(
        **common,
        tool_call=turn_pb2.ToolCall(
            call_id="c", tool="add", arguments_json='{"a": 1}', requires_approval=True, mcp_server="m", round=2,
            wait_deadline=deadline,
        ),
    )  # fmt: skip
    converted = event_from_proto(tc)
    assert isinstance(converted, ToolCall) and converted.kind == "tool_call"
    assert converted.arguments == {"a": 1} and converted.round == 2 and not converted.runs_on_client
    assert converted.wait_deadline == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    ar = event_from_proto(
        turn_pb2.TurnEvent(**common, approval_required=turn_pb2.ApprovalRequired(call_id="c", tool="add"))
    )
    assert isinstance(ar, ApprovalRequired) and ar.arguments == {} and ar.wait_deadline is None
    ad = event_from_proto(
        turn_pb2.TurnEvent(**common, approval_decided=turn_pb2.ApprovalDecided(call_id="c", reason="r", approver="a"))
    )
    assert ad == ApprovalDecided(**common, call_id="c", approved=False, reason="r", approver="a")
    tr = event_from_proto(
        turn_pb2.TurnEvent(
            **common,
            tool_result=turn_pb2.ToolResult(
                call_id="c", tool="add", is_error=True, source=turn_pb2.TOOL_RESULT_SOURCE_REJECTED,
                content_preview="no", content_bytes=2, duration=Duration(seconds=1, nanos=500_000_000),
            ),
        )
    )  # fmt: skip
    assert isinstance(tr, ToolResult) and tr.source == "rejected" and tr.duration_s == 1.5 and tr.is_error
    usage = event_from_proto(turn_pb2.TurnEvent(**common, usage=turn_pb2.Usage(model_rounds=3)))
    assert usage is not None and getattr(usage, "model_rounds", None) == 3
