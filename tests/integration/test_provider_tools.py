"""Tool use on the wire: our providers against local servers that speak each vendor's tool protocol, the
Anthropic provider through the real ``anthropic`` SDK, and OpenAI's own SDK against the same chat-completions
server to prove that server (so our parser and our requests) speaks the real format.

Each test scripts the model's rounds at the server and counts the requests it received: one per round."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from salon.actors.model import Message, ModelChunk, ModelRequest, ModelResult, TextDelta, ToolCall, ToolResult, ToolSpec
from salon.providers.anthropic import AnthropicProvider
from salon.providers.fake_servers import FakeAnthropicServer, FakeOpenAIServer, Reply, ToolResultSent, ToolUse
from salon.providers.openai_compatible import OpenAICompatibleProvider
from salon.providers.turns import MISSING_RESULT

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
    "required": ["order_id"],
}
LOOKUP = ToolSpec("lookup_order", "Finds an order by its id", json.dumps(ORDER_SCHEMA))
WEATHER = ToolSpec("weather", "", '{"type": "object", "properties": {"city": {"type": "string"}}}')
QUESTION = Message("user", "Where is my order 42, and is it raining in Oslo?")


@pytest.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
async def claude(anthropic_server: FakeAnthropicServer) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(model="claude-test", api_key="k", base_url=anthropic_server.url, idle_timeout_s=10)
    yield provider
    await provider.aclose()


@pytest.fixture
async def local(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAICompatibleProvider]:
    provider = OpenAICompatibleProvider(base_url=openai_server.url + "/v1", model="local-llama", idle_timeout_s=10)
    yield provider
    await provider.aclose()


async def _round(provider: AnthropicProvider | OpenAICompatibleProvider, request: ModelRequest) -> list[ModelChunk]:
    return [chunk async for chunk in provider.stream(request)]


def _split(chunks: list[ModelChunk]) -> tuple[str, list[ToolCall], ModelResult]:
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    calls = [c for c in chunks if isinstance(c, ToolCall)]
    assert isinstance(chunks[-1], ModelResult)
    assert all(not isinstance(c, ModelResult) for c in chunks[:-1])
    # Every call comes after the text and before the result: complete calls, never interleaved with text.
    kinds = [type(c).__name__ for c in chunks]
    assert kinds == sorted(kinds, key=["TextDelta", "ToolCall", "ModelResult"].index)
    return text, calls, chunks[-1]


def _answered(calls: list[ToolCall], *contents: tuple[str, bool]) -> tuple[Message, Message]:
    """The assistant message with ``calls`` and the tool message with their results."""
    results = tuple(
        ToolResult(c.call_id, c.name, text, error) for c, (text, error) in zip(calls, contents, strict=True)
    )
    return Message("assistant", "", tool_calls=tuple(calls)), Message("tool", "", tool_results=results)


# Anthropic


async def test_anthropic_tool_round_trip(anthropic_server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    anthropic_server.push(
        Reply.calls(ToolUse("lookup_order", {"order_id": "42", "verbose": True}), text=["Let me ", "check."]),
        Reply(tokens=["It ", "shipped."]),
    )
    first = ModelRequest(system="Be brief.", messages=(QUESTION,), tools=(LOOKUP,))
    text, calls, result = _split(await _round(claude, first))
    assert text == "Let me check."
    assert [(c.call_id, c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("toolu_1", "lookup_order", {"order_id": "42", "verbose": True})
    ]
    assert result.stop_reason == "tool_use" and result.output_tokens > 0 and result.input_tokens == 10

    sent = anthropic_server.requests[0].body
    assert sent["tools"] == [
        {"name": "lookup_order", "description": "Finds an order by its id", "input_schema": ORDER_SCHEMA}
    ]

    calling = Message("assistant", text, tool_calls=tuple(calls))
    results = Message("tool", "", tool_results=(ToolResult("toolu_1", "lookup_order", '{"status": "shipped"}'),))
    second = ModelRequest(system="Be brief.", messages=(QUESTION, calling, results), tools=(LOOKUP,))
    text, calls, result = _split(await _round(claude, second))
    assert (text, calls, result.stop_reason) == ("It shipped.", [], "end_turn")

    assert len(anthropic_server.requests) == 2  # one request per round
    messages = anthropic_server.requests[1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"order_id": "42", "verbose": True}},
    ]
    assert messages[2]["content"][0]["type"] == "tool_result"
    assert anthropic_server.tool_results(anthropic_server.requests[1].body) == [
        ToolResultSent("toolu_1", '{"status": "shipped"}', False)
    ]


async def test_anthropic_parallel_calls_and_an_error_result(
    anthropic_server: FakeAnthropicServer, claude: AnthropicProvider
) -> None:
    anthropic_server.push(
        Reply.calls(
            ToolUse("lookup_order", {"order_id": "42"}, call_id="toolu_a"),
            ToolUse("weather", {"city": "Oslo, the capital of Norway"}, call_id="toolu_b"),
            argument_pieces=5,
        ),
        Reply(tokens=["Done."]),
    )
    request = ModelRequest(system="", messages=(QUESTION,), tools=(LOOKUP, WEATHER))
    text, calls, result = _split(await _round(claude, request))
    assert text == "" and result.stop_reason == "tool_use"
    assert [(c.call_id, c.name) for c in calls] == [("toolu_a", "lookup_order"), ("toolu_b", "weather")]
    assert json.loads(calls[1].arguments_json) == {"city": "Oslo, the capital of Norway"}

    calling, results = _answered(calls, ("shipped", False), ("the weather service is down", True))
    await _round(claude, ModelRequest(system="", messages=(QUESTION, calling, results), tools=(LOOKUP, WEATHER)))
    body = anthropic_server.requests[1].body
    assert "description" not in body["tools"][1]  # an empty description is not sent
    assert anthropic_server.tool_results(body) == [
        ToolResultSent("toolu_a", "shipped", False),
        ToolResultSent("toolu_b", "the weather service is down", True),
    ]
    # The newest message, the tool results, is the conversation's cache breakpoint.
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


async def test_anthropic_calls_cut_off_by_max_tokens_are_not_yielded(
    anthropic_server: FakeAnthropicServer, claude: AnthropicProvider
) -> None:
    anthropic_server.push(Reply.calls(ToolUse("lookup_order", '{"order_id": "4'), stop_reason="max_tokens"))
    _, calls, result = _split(await _round(claude, ModelRequest(system="", messages=(QUESTION,), tools=(LOOKUP,))))
    assert calls == [] and result.stop_reason == "max_tokens"
    assert result.extra["incomplete_tool_calls"] == "1"


async def test_anthropic_history_without_tools_is_sent_as_text(
    anthropic_server: FakeAnthropicServer, claude: AnthropicProvider
) -> None:
    calling, results = _answered([ToolCall("toolu_9", "lookup_order", '{"order_id": "42"}')], ("shipped", False))
    await _round(claude, ModelRequest(system="", messages=(QUESTION, calling, results, Message("user", "thanks"))))
    body = anthropic_server.requests[0].body
    assert "tools" not in body
    blocks = [b for m in body["messages"] for b in m["content"]]
    assert {b["type"] for b in blocks} == {"text"}
    assert "lookup_order" in body["messages"][1]["content"][0]["text"]


async def test_anthropic_a_call_without_its_result_is_answered_for_the_vendor(
    anthropic_server: FakeAnthropicServer, claude: AnthropicProvider
) -> None:
    calling = Message("assistant", "", tool_calls=(ToolCall("toolu_1", "lookup_order", "{}"),))
    await _round(
        claude, ModelRequest(system="", messages=(QUESTION, calling, Message("user", "hello?")), tools=(LOOKUP,))
    )
    body = anthropic_server.requests[0].body
    assert anthropic_server.tool_results(body) == [ToolResultSent("toolu_1", MISSING_RESULT, True)]
    assert body["messages"][-1]["content"][-1] == {
        "type": "text",
        "text": "hello?",
        "cache_control": {"type": "ephemeral"},
    }


# OpenAI-compatible


async def test_openai_compatible_tool_round_trip(
    openai_server: FakeOpenAIServer, local: OpenAICompatibleProvider
) -> None:
    openai_server.push(
        Reply.calls(ToolUse("lookup_order", {"order_id": "42"}), text=["Checking."]),
        Reply(tokens=["It ", "shipped."]),
    )
    first = ModelRequest(system="Be brief.", messages=(QUESTION,), tools=(LOOKUP,))
    text, calls, result = _split(await _round(local, first))
    assert text == "Checking."
    assert [(c.call_id, c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("call_1", "lookup_order", {"order_id": "42"})
    ]
    assert result.stop_reason == "tool_use" and result.output_tokens == 2
    assert openai_server.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup_order", "description": "Finds an order by its id", "parameters": ORDER_SCHEMA},
        }
    ]

    calling = Message("assistant", text, tool_calls=tuple(calls))
    results = Message("tool", "", tool_results=(ToolResult("call_1", "lookup_order", "shipped"),))
    text, _, result = _split(
        await _round(local, ModelRequest("Be brief.", (QUESTION, calling, results), tools=(LOOKUP,)))
    )
    assert (text, result.stop_reason, len(openai_server.requests)) == ("It shipped.", "end_turn", 2)
    messages = openai_server.requests[1].body["messages"]
    assert messages[2:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "42"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]


@pytest.mark.parametrize("same_index", [False, True], ids=["indexed", "ollama-style"])
async def test_openai_compatible_parallel_calls(
    openai_server: FakeOpenAIServer, local: OpenAICompatibleProvider, same_index: bool
) -> None:
    openai_server.push(
        Reply.calls(
            ToolUse("lookup_order", {"order_id": "42"}),
            ToolUse("weather", {"city": "Oslo"}),
            argument_pieces=4,
            same_index=same_index,
        )
    )
    _, calls, result = _split(await _round(local, ModelRequest("", (QUESTION,), tools=(LOOKUP, WEATHER))))
    assert result.stop_reason == "tool_use"
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("lookup_order", {"order_id": "42"}),
        ("weather", {"city": "Oslo"}),
    ]
    assert len({c.call_id for c in calls}) == 2

    calling, results = _answered(calls, ("shipped", False), ("no such city", True))
    await _round(local, ModelRequest("", (QUESTION, calling, results), tools=(LOOKUP, WEATHER)))
    assert openai_server.tool_results(openai_server.requests[1].body) == [
        ToolResultSent(calls[0].call_id, "shipped", False),
        ToolResultSent(calls[1].call_id, "Error: no such city", True),
    ]


async def test_openai_sdk_reads_the_fake_servers_tool_stream_and_sends_what_our_provider_sends(
    openai_server: FakeOpenAIServer, local: OpenAICompatibleProvider
) -> None:
    """OpenAI's SDK assembles the same calls from the server's stream, and for the same conversation it sends
    the same messages and tools as our provider: both sides of the fake speak the real protocol."""
    script = [
        Reply.calls(
            ToolUse("lookup_order", {"order_id": "42"}, call_id="call_x"),
            ToolUse("weather", {"city": "Oslo"}, call_id="call_y"),
            text=["Looking."],
        ),
        Reply(tokens=["Fine."]),
    ]
    openai_server.push(*script)
    client = openai.AsyncOpenAI(base_url=openai_server.url + "/v1", api_key="k", max_retries=0)
    try:
        sdk_tools: Any = [
            {
                "type": "function",
                "function": {"name": t.name, **_described(t), "parameters": json.loads(t.input_schema_json)},
            }
            for t in (LOOKUP, WEATHER)
        ]
        sdk_messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION.text}]
        async with client.chat.completions.stream(
            model="local-llama", messages=sdk_messages, tools=sdk_tools
        ) as stream:
            completion = await stream.get_final_completion()
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Looking."
        sdk_calls = choice.message.tool_calls or []
        assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in sdk_calls] == [
            ("call_x", "lookup_order", {"order_id": "42"}),
            ("call_y", "weather", {"city": "Oslo"}),
        ]
        sdk_messages += [
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in sdk_calls
                ],
            },
            {"role": "tool", "tool_call_id": "call_x", "content": "shipped"},
            {"role": "tool", "tool_call_id": "call_y", "content": "sunny"},
        ]
        await client.chat.completions.create(model="local-llama", messages=sdk_messages, tools=sdk_tools, stream=True)
    finally:
        await client.close()

    openai_server.push(*script)
    _, calls, _ = _split(await _round(local, ModelRequest("Be brief.", (QUESTION,), tools=(LOOKUP, WEATHER))))
    calling = Message("assistant", "Looking.", tool_calls=tuple(calls))
    results = Message(
        "tool",
        "",
        tool_results=tuple(ToolResult(c.call_id, c.name, r) for c, r in zip(calls, ["shipped", "sunny"], strict=True)),
    )
    await _round(local, ModelRequest("Be brief.", (QUESTION, calling, results), tools=(LOOKUP, WEATHER)))

    sdk_first, sdk_second, ours_first, ours_second = (r.body for r in openai_server.requests)
    for sdk, ours in ((sdk_first, ours_first), (sdk_second, ours_second)):
        assert ours["messages"] == sdk["messages"]
        assert ours["tools"] == sdk["tools"]
        assert ours["stream"] is sdk["stream"] is True


def _described(spec: ToolSpec) -> dict[str, str]:
    return {"description": spec.description} if spec.description else {}
