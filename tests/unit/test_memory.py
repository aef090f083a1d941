"""The sliding window: most recent messages that fit, whole, never starting with a reply."""

from __future__ import annotations

from salon.actors.memory import estimate_tokens, fit_window
from salon.actors.model import Message


def conversation(turns: int, chars: int = 8) -> list[Message]:
    """``turns`` user/assistant pairs; texts are ``chars`` long and name their position."""
    messages: list[Message] = []
    for i in range(turns):
        messages.append(Message("user", f"u{i}".ljust(chars, "."), f"t{i}"))
        messages.append(Message("assistant", f"a{i}".ljust(chars, "."), f"t{i}"))
    return messages


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_everything_fits() -> None:
    messages = conversation(3)
    assert fit_window(messages, max_messages=100, token_budget=1000) == messages


def test_max_messages_keeps_most_recent() -> None:
    messages = conversation(5)
    window = fit_window(messages, max_messages=4, token_budget=0)
    assert [m.text[:2] for m in window] == ["u3", "a3", "u4", "a4"]


def test_odd_max_messages_never_starts_with_a_reply() -> None:
    messages = conversation(5)
    window = fit_window(messages, max_messages=3, token_budget=0)
    # The 3 most recent are a3, u4, a4: the orphaned reply a3 is dropped.
    assert [m.text[:2] for m in window] == ["u4", "a4"]
    assert window[0].role == "user"


def test_token_budget_keeps_most_recent_whole_messages() -> None:
    messages = conversation(5, chars=8)  # 2 tokens each
    window = fit_window(messages, max_messages=100, token_budget=9)
    # 4 messages cost 8 tokens; a fifth would make 10 > 9.
    assert [m.text[:2] for m in window] == ["u3", "a3", "u4", "a4"]


def test_token_budget_cut_never_starts_with_a_reply() -> None:
    messages = conversation(5, chars=8)  # 2 tokens each
    window = fit_window(messages, max_messages=100, token_budget=7)
    # 3 messages fit (a3, u4, a4); the orphaned reply a3 is dropped.
    assert [m.text[:2] for m in window] == ["u4", "a4"]


def test_token_budget_never_cuts_a_message() -> None:
    messages = [Message("user", "x" * 400), Message("assistant", "y" * 40), Message("user", "z" * 40)]
    window = fit_window(messages, max_messages=100, token_budget=50)
    assert window == [Message("user", "z" * 40)]
    assert all(m in messages for m in window)


def test_latest_message_over_budget_gives_empty_window() -> None:
    messages = [Message("user", "short"), Message("user", "x" * 1000)]
    assert fit_window(messages, max_messages=10, token_budget=10) == []


def test_zero_budget_means_no_token_limit() -> None:
    messages = conversation(2, chars=4000)
    assert fit_window(messages, max_messages=10, token_budget=0) == messages


def test_zero_max_messages_and_empty_input() -> None:
    assert fit_window(conversation(2), max_messages=0, token_budget=0) == []
    assert fit_window([], max_messages=10, token_budget=100) == []


def test_only_replies_gives_empty_window() -> None:
    messages = [Message("assistant", "a"), Message("assistant", "b")]
    assert fit_window(messages, max_messages=10, token_budget=0) == []


def test_does_not_modify_its_input() -> None:
    messages = conversation(4)
    before = list(messages)
    fit_window(messages, max_messages=3, token_budget=5)
    assert messages == before
