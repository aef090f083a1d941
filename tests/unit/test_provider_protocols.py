"""What the HTTP providers send and how they read answers and errors, without sockets."""

from __future__ import annotations

import email.utils

import anthropic
import httpx2
import pytest

from salon.actors.model import Message, ModelError, ModelRequest
from salon.providers import errors
from salon.providers.anthropic import AnthropicProvider, build_params, classify
from salon.providers.openai_compatible import _Accumulator, build_body
from salon.providers.pricing import PriceTable
from salon.providers.turns import HeldBackWhitespace, merge_turns, split_prefill


def _request(**fields: object) -> ModelRequest:
    base: dict[str, object] = {
        "system": "You are terse.",
        "messages": (Message("user", "one"), Message("assistant", "reply"), Message("user", "two")),
    }
    base.update(fields)
    return ModelRequest(**base)  # type: ignore[arg-type]


# turns


def test_merge_turns_joins_runs_and_drops_empty_messages() -> None:
    messages = (Message("user", "a"), Message("user", "b"), Message("assistant", ""), Message("assistant", "c"))
    assert merge_turns(messages) == [("user", "a\n\nb"), ("assistant", "c")]


def test_prefill_whitespace_is_held_back_and_not_repeated() -> None:
    assert split_prefill("Hello, wor") == ("Hello, wor", "")
    assert split_prefill("Hello \n") == ("Hello", " \n")
    unrepeat = HeldBackWhitespace(" ")
    assert unrepeat(" ") == ""
    assert unrepeat("world") == "world"
    assert unrepeat(" again") == " again"  # only the start of the continuation is trimmed
    unrepeat = HeldBackWhitespace(" ")
    assert unrepeat("  two") == " two"  # one space was the client's, the other is the model's
    assert HeldBackWhitespace("")(" x") == " x"


# Anthropic request


def test_system_prompt_and_newest_message_are_cache_breakpoints() -> None:
    params = build_params(_request(temperature=0.3, stop_sequences=("END",), max_tokens=50), "claude-x", "conversation")
    assert params["model"] == "claude-x"
    assert params["max_tokens"] == 50
    assert "temperature" not in params  # the API version of SDK 2.x rejects sampling parameters
    assert params["stop_sequences"] == ["END"]
    assert params["system"] == [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    messages = params["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in block for m in messages[:-1] for block in m["content"])


def test_prompt_cache_modes() -> None:
    system_only = build_params(_request(), "m", "system")
    assert "cache_control" in system_only["system"][0]
    assert all("cache_control" not in b for m in system_only["messages"] for b in m["content"])
    off = build_params(_request(), "m", "off")
    assert "cache_control" not in off["system"][0]
    assert all("cache_control" not in b for m in off["messages"] for b in m["content"])
    no_system = build_params(_request(system="", temperature=None), "m", "conversation")
    assert "system" not in no_system and "temperature" not in no_system and "stop_sequences" not in no_system


def test_prefill_is_a_trailing_assistant_message_without_trailing_whitespace() -> None:
    params = build_params(_request(prefill="The answer is "), "m", "conversation")
    assert params["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]}
    # The cache breakpoint stays on the user's message: the prefill changes on every attempt.
    assert params["messages"][-2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert build_params(_request(prefill="   "), "m", "off")["messages"][-1]["role"] == "user"


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers or {}, request=httpx2.Request("POST", "http://x/v1/messages"))


def _status_error(status: int, error_type: str, headers: dict[str, str] | None = None, code: str = "") -> Exception:
    body: dict[str, object] = {"type": "error", "error": {"type": error_type, "message": "m"}}
    if code:
        body["error"] = {"type": error_type, "message": "m", "details": {"error_code": code}}
    return anthropic.APIStatusError("m", response=_response(status, headers), body=body)


@pytest.mark.parametrize(
    ("exc", "reason", "retryable", "retry_after"),
    [
        (_status_error(429, "rate_limit_error", {"retry-after": "7"}), errors.RATE_LIMITED, True, 7.0),
        (_status_error(429, "rate_limit_error"), errors.QUOTA_EXHAUSTED, False, None),
        (
            _status_error(429, "rate_limit_error", {"retry-after": "7"}, code="enforced_spend_limit_reached"),
            errors.QUOTA_EXHAUSTED,
            False,
            None,
        ),
        (_status_error(529, "overloaded_error"), errors.OVERLOADED, True, None),
        (_status_error(200, "overloaded_error"), errors.OVERLOADED, True, None),  # an error event mid-stream
        (_status_error(500, "api_error"), errors.UNAVAILABLE, True, None),
        (_status_error(503, "api_error", {"retry-after-ms": "1500"}), errors.UNAVAILABLE, True, 1.5),
        (_status_error(401, "authentication_error"), errors.AUTH_FAILED, False, None),
        (_status_error(400, "invalid_request_error"), errors.INVALID_REQUEST, False, None),
        (_status_error(404, "not_found_error"), errors.INVALID_REQUEST, False, None),
        (anthropic.APITimeoutError(request=httpx2.Request("POST", "http://x")), errors.STALLED, True, None),
        (httpx2.ReadTimeout("idle"), errors.STALLED, True, None),
        (anthropic.APIConnectionError(request=httpx2.Request("POST", "http://x")), errors.UNAVAILABLE, True, None),
        (httpx2.RemoteProtocolError("peer closed"), errors.UNAVAILABLE, True, None),
        (ValueError("bad json"), errors.PROTOCOL_ERROR, True, None),
        (RuntimeError("?"), "MODEL_ERROR", False, None),
        (TypeError("Could not resolve authentication method."), errors.AUTH_FAILED, False, None),
        (anthropic.CredentialsError("no profile"), errors.AUTH_FAILED, False, None),
    ],
)
def test_sdk_errors_are_classified(exc: Exception, reason: str, retryable: bool, retry_after: float | None) -> None:
    error = classify(exc, idle_timeout_s=5)
    assert (error.reason, error.retryable, error.retry_after_s) == (reason, retryable, retry_after)


def test_result_maps_stop_reasons_and_prices_the_usage() -> None:
    provider = AnthropicProvider(model="claude-x", api_key="k", prices=PriceTable.parse("claude-x=3/15/0.3/3.75"))
    usage = {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 10_000}
    usage["cache_creation_input_tokens"] = 2000
    result = provider._result(usage, "stop_sequence", "END", "claude-x-2025")
    assert (result.stop_reason, result.stop_sequence, result.provider, result.model) == (
        "stop_sequence",
        "END",
        "anthropic",
        "claude-x-2025",
    )
    assert result.estimated_cost_usd == pytest.approx((1000 * 3 + 200 * 15 + 10_000 * 0.3 + 2000 * 3.75) / 1e6)
    assert (result.cache_read_input_tokens, result.cache_creation_input_tokens) == (10_000, 2000)
    assert provider._result({}, "model_context_window_exceeded", None, "m").stop_reason == "max_tokens"
    paused = provider._result({}, "pause_turn", None, "m")
    assert paused.stop_reason == "end_turn" and paused.extra == {"upstream_stop_reason": "pause_turn"}
    assert provider._result({}, None, None, "m").stop_reason == "end_turn"


def test_an_unknown_prompt_cache_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="prompt_cache"):
        AnthropicProvider(prompt_cache="always")


# errors


def test_retry_after_forms() -> None:
    assert errors.parse_retry_after({"retry-after": "12"}) == 12
    assert errors.parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert errors.parse_retry_after({"retry-after": "soon"}) is None
    assert errors.parse_retry_after({}) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert errors.parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(30)
    assert errors.parse_retry_after({"retry-after": "-3"}) == 0


def test_http_errors_name_the_provider_and_never_echo_content() -> None:
    error = errors.http_error(502, provider="openai_compatible")
    assert error.message.startswith("openai_compatible answered 502")
    assert (error.reason, error.retryable) == (errors.UNAVAILABLE, True)
    assert errors.http_error(402, provider="p").reason == errors.QUOTA_EXHAUSTED
    assert errors.http_error(408, provider="p").retryable
    assert errors.http_error(200, error_type="mystery", provider="p").retryable


# OpenAI-compatible request and answer


def test_chat_completions_body() -> None:
    body = build_body(_request(temperature=0.2, stop_sequences=("END",), max_tokens=9, prefill="The"), "llama")
    assert body["model"] == "llama" and body["stream"] is True and body["max_tokens"] == 9
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2 and body["stop"] == ["END"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert body["messages"][-1]["content"] == "The"
    plain = build_body(_request(system=""), "m")
    assert plain["messages"][0]["role"] == "user" and "temperature" not in plain and "stop" not in plain


def test_accumulator_reads_text_finish_usage_and_the_matched_stop_string() -> None:
    acc = _Accumulator("requested")
    assert acc.feed({"model": "served", "choices": [{"delta": {"role": "assistant", "content": ""}}]}) == []
    assert acc.feed({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]}) == ["Hi"]
    assert acc.feed({"choices": [{"delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}) == []
    usage = {"prompt_tokens": 120, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 100}}
    assert acc.feed({"choices": [], "usage": usage}) == []
    result = acc.result("openai_compatible", PriceTable.parse("served=1/2"), ("END",))
    assert (result.stop_reason, result.stop_sequence, result.model) == ("stop_sequence", "END", "served")
    assert (result.input_tokens, result.cache_read_input_tokens, result.output_tokens) == (20, 100, 7)
    assert result.estimated_cost_usd == pytest.approx((20 * 1 + 7 * 2 + 100 * 0.1) / 1e6)


@pytest.mark.parametrize(
    ("finish", "stop"), [("length", "max_tokens"), ("content_filter", "refusal"), ("x", "end_turn")]
)
def test_finish_reasons(finish: str, stop: str) -> None:
    acc = _Accumulator("m")
    acc.feed({"choices": [{"delta": {}, "finish_reason": finish}]})
    assert acc.result("p", PriceTable(), ()).stop_reason == stop


def test_an_error_chunk_raises() -> None:
    with pytest.raises(ModelError) as info:
        _Accumulator("m").feed({"error": {"message": "oom", "type": "server_error", "code": 503}})
    assert (info.value.reason, info.value.retryable) == (errors.UNAVAILABLE, True)
