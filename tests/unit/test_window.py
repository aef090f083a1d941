"""The sliding window keeps whole turns: a question with its answer, a tool call with its result."""

from __future__ import annotations

from salon.actors.memory import estimate_tokens, fit_window, turn_groups
from salon.actors.model import Message


def turn(index: int, *texts: str) -> list[Message]:
    """One turn's messages: user first, then alternating replies (tool call, tool result, answer …)."""
    roles = ["user", "assistant"]
    return [Message(roles[i % 2], t, f"t{index}", index) for i, t in enumerate(texts)]  # type: ignore[arg-type]


def test_turn_groups_keep_a_turns_messages_together() -> None:
    messages = [*turn(1, "q1", "a1"), Message("user", "loose"), *turn(2, "q2", "call", "result", "a2")]
    groups = turn_groups(messages)
    assert [[m.text for m in g] for g in groups] == [["q1", "a1"], ["loose"], ["q2", "call", "result", "a2"]]


def test_a_turn_that_does_not_fit_whole_is_left_out_whole() -> None:
    # Turn 2 has four messages (a tool call and its result among them); only three more messages fit.
    messages = [*turn(1, "q1", "a1"), *turn(2, "q2", "call", "result", "a2"), *turn(3, "q3", "a3")]
    window = fit_window(messages, max_messages=5, token_budget=0)
    assert [m.text for m in window] == ["q3", "a3"]


def test_a_tool_call_is_never_separated_from_its_result_by_the_token_budget() -> None:
    big = "x" * 400  # 100 tokens
    messages = [*turn(1, "q1", "a1"), *turn(2, "q2", big, "result", "a2")]
    budget = sum(estimate_tokens(m.text) for m in messages[3:])  # everything after the tool call fits
    window = fit_window(messages, max_messages=100, token_budget=budget)
    assert window == []  # turn 2 costs more than the budget as a whole: no piece of it enters


def test_window_is_the_most_recent_whole_turns_within_both_limits() -> None:
    messages = [m for i in range(1, 31) for m in turn(i, f"question {i}", f"answer {i}")]
    window = fit_window(messages, max_messages=19, token_budget=0)
    assert len(window) == 18
    assert window[0].text == "question 22" and window[-1].text == "answer 30"
    assert all(m.role == "user" for m in window[::2])
