"""How the HTTP providers shape tool calls and results, and read streamed calls, without sockets."""

from __future__ import annotations

import json

from salon.actors.model import Message, ModelRequest, ToolCall, ToolResult, ToolSpec
from salon.providers.anthropic import build_params
from salon.providers.openai_compatible import _Accumulator, build_body
from salon.providers.pricing import PriceTable
from salon.providers.turns import MISSING_RESULT, conversation, merge_turns

CALL = ToolCall("c1", "lookup", '{"id": 1}')
RESULT = ToolResult("c1", "lookup", "found")
TOOL = ToolSpec("lookup", "Looks up", '{"type": "object"}')


def _tool_message(*results: ToolResult) -> Message:
    return Message("tool", "", tool_results=results)


def test_conversation_pairs_calls_with_their_results() -> None:
    messages = (
        Message("user", "q"),
        Message("assistant", "let me look", tool_calls=(CALL, ToolCall("c2", "lookup", "{}"))),
        _tool_message(ToolResult("c2", "lookup", "second"), RESULT, ToolResult("stray", "x", "orphan")),
        Message("assistant", "done"),
    )
    entries = conversation(messages)
    assert [e.role for e in entries] == ["user", "assistant", "user", "assistant"]
    # Results follow the calls' order; one answering no call is dropped.
    assert [r.call_id for r in entries[2].results] == ["c1", "c2"]
    assert entries[1].text == "let me look" and len(entries[1].calls) == 2


def test_a_missing_result_is_supplied_and_an_entry_left_empty_is_dropped() -> None:
    messages = (
        Message("user", "q"),
        Message("assistant", "a"),
        _tool_message(ToolResult("stray", "x", "orphan")),  # answers nothing: dropped, then empty
        Message("assistant", "b", tool_calls=(CALL,)),
        Message("user", "next"),
    )
    entries = conversation(messages)
    assert [e.role for e in entries] == ["user", "assistant", "user"]
    assert entries[1].text == "a\n\nb" and entries[1].calls == [CALL]
    assert entries[2].results == [ToolResult("c1", "lookup", MISSING_RESULT, True)]
    assert entries[2].text == "next"
    ending = conversation((Message("user", "q"), Message("assistant", "", tool_calls=(CALL,))))
    assert ending[-1].role == "user" and ending[-1].results[0].content == MISSING_RESULT


def test_without_tools_calls_and_results_are_text() -> None:
    messages = (Message("user", "q"), Message("assistant", "", tool_calls=(CALL,)), _tool_message(RESULT))
    assert merge_turns(messages) == [
        ("user", "q"),
        ("assistant", '[called the tool lookup with {"id": 1}]'),
        ("user", "[result of the tool lookup: found]"),
    ]
    assert merge_turns((Message("user", "a"), Message("user", "b"))) == [("user", "a\n\nb")]


def test_anthropic_sends_blocks_and_tools() -> None:
    messages = (Message("user", "q"), Message("assistant", "", tool_calls=(CALL,)), _tool_message(RESULT))
    params = build_params(ModelRequest("sys", messages, tools=(TOOL,)), "m", "off")
    assert params["tools"] == [{"name": "lookup", "description": "Looks up", "input_schema": {"type": "object"}}]
    assert params["messages"][1]["content"] == [{"type": "tool_use", "id": "c1", "name": "lookup", "input": {"id": 1}}]
    assert params["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": "found"}]
    bad = Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", "not json"),))
    sent = build_params(ModelRequest("", (messages[0], bad, _tool_message(RESULT)), tools=(TOOL,)), "m", "off")
    assert sent["messages"][1]["content"][0]["input"] == {}
    assert "tools" not in build_params(ModelRequest("", messages), "m", "off")


def test_openai_sends_tool_calls_and_tool_messages() -> None:
    error = ToolResult("c1", "lookup", "boom", is_error=True)
    messages = (Message("user", "q"), Message("assistant", "", tool_calls=(CALL,)), _tool_message(error))
    body = build_body(ModelRequest("", messages, tools=(TOOL,)), "m")
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 1}'}}],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "Error: boom"}
    assert body["tools"][0]["function"]["parameters"] == {"type": "object"}


def _chunk(*tool_calls: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": list(tool_calls)}, "finish_reason": finish}]}


def test_accumulator_assembles_calls_across_chunks() -> None:
    acc = _Accumulator("m")
    acc.feed(_chunk({"index": 0, "id": "a", "type": "function", "function": {"name": "lookup", "arguments": ""}}))
    acc.feed(_chunk({"index": 1, "id": "b", "function": {"name": "weather", "arguments": '{"ci'}}))
    acc.feed(_chunk({"index": 0, "function": {"arguments": '{"id": '}}))
    acc.feed(
        _chunk({"index": 0, "function": {"arguments": "1}"}}, {"index": 1, "function": {"arguments": 'ty": "x"}'}})
    )
    acc.feed(_chunk(finish="tool_calls"))
    assert [(c.call_id, c.name, json.loads(c.arguments_json)) for c in acc.calls] == [
        ("a", "lookup", {"id": 1}),
        ("b", "weather", {"city": "x"}),
    ]
    assert acc.result("p", PriceTable(), ()).stop_reason == "tool_use"


def test_accumulator_tolerates_server_dialects() -> None:
    acc = _Accumulator("m")
    # Arguments as an object, no index, finishing with "stop" after a call (llama.cpp, Ollama variants).
    acc.feed(_chunk({"id": "a", "function": {"name": "lookup", "arguments": {"id": 1}}}, finish="stop"))
    assert [(c.call_id, json.loads(c.arguments_json)) for c in acc.calls] == [("a", {"id": 1})]
    assert acc.result("p", PriceTable(), ()).stop_reason == "tool_use"
    cut = _Accumulator("m")
    cut.feed(_chunk({"index": 0, "function": {"name": "lookup", "arguments": '{"i'}}, finish="length"))
    result = cut.result("p", PriceTable(), ())
    assert result.stop_reason == "max_tokens" and result.extra == {"incomplete_tool_calls": "1"}
    assert cut.calls[0].call_id == "call_0"  # a server that sends no id still gets one
    garbage = _Accumulator("m")
    garbage.feed({"choices": [{"delta": {"tool_calls": "nope"}, "finish_reason": "stop"}]})
    garbage.feed({"choices": [{"delta": {"tool_calls": [1, None, {"index": 0}]}}]})
    assert (
        garbage.result("p", PriceTable(), ()).stop_reason == "tool_use"
    )  # a call with no name: the tool layer refuses it
