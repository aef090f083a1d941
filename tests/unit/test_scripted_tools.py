"""The scripted provider's tool calls: rounds scripted in the user's message, answered the same way each time."""

from __future__ import annotations

import pytest

from salon.actors.model import (
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    ModelResult,
    TextDelta,
    ToolCall,
    ToolResult,
)
from salon.providers.scripted import ScriptedProvider, ToolScript

SCRIPT = """Check my order $RESULTS
$CALL lookup_order {"order_id": "42"}
$CALL weather {"city": "Oslo"}
$THEN
$CALL refund
"""


async def _round(provider: ScriptedProvider, *messages: Message) -> list[ModelChunk]:
    return [chunk async for chunk in provider.stream(ModelRequest(system="", messages=messages))]


def _answer(calls: list[ModelChunk], *contents: str) -> tuple[Message, Message]:
    made = tuple(c for c in calls if isinstance(c, ToolCall))
    results = tuple(ToolResult(c.call_id, c.name, text) for c, text in zip(made, contents, strict=True))
    return Message("assistant", "", tool_calls=made), Message("tool", "", tool_results=results)


def test_the_script_is_parsed_round_by_round() -> None:
    script = ToolScript.parse(SCRIPT)
    assert script.rounds == (
        (("lookup_order", '{"order_id": "42"}'), ("weather", '{"city": "Oslo"}')),
        (("refund", "{}"),),
    )
    assert script.text.strip() == "Check my order $RESULTS"
    assert [c.call_id for c in script.calls(0)] == ["call_1_1", "call_1_2"]
    assert script.calls(2) == []
    assert ToolScript.parse("no calls here").rounds == ()


async def test_rounds_of_calls_then_an_answer_quoting_the_results() -> None:
    provider = ScriptedProvider(tokens=5)
    question = Message("user", SCRIPT)
    first = await _round(provider, question)
    assert [type(c) for c in first] == [ToolCall, ToolCall, ModelResult]
    assert isinstance(first[-1], ModelResult) and first[-1].stop_reason == "tool_use"
    asked, answered = _answer(first, "shipped", "sunny")
    second = await _round(provider, question, asked, answered)
    assert [c.name for c in second if isinstance(c, ToolCall)] == ["refund"]
    asked2, answered2 = _answer(second, "refunded")
    final = await _round(provider, question, asked, answered, asked2, answered2)
    text = "".join(c.text for c in final if isinstance(c, TextDelta))
    assert text == "Check my order refunded Check "
    assert isinstance(final[-1], ModelResult) and final[-1].stop_reason == "end_turn"
    assert provider.calls == 3
    assert await _round(provider, question) == first  # the same round is answered the same way again


async def test_a_later_turn_without_a_script_answers_as_before() -> None:
    provider = ScriptedProvider(tokens=2)
    earlier = Message("user", "$CALL lookup_order {}")
    chunks = await _round(provider, earlier, Message("assistant", "done"), Message("user", "plain words"))
    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["plain ", "words "]


async def test_a_scripted_failure_before_any_output_covers_call_rounds() -> None:
    with pytest.raises(ModelError):
        await _round(ScriptedProvider(fail_after=0), Message("user", "$CALL t {}"))
