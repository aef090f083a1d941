"""The offline responder and the scripted provider, and continuing an answer after a prefill."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from salon.actors.model import (
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    ModelResult,
    TextDelta,
    ToolSpec,
    continue_after,
)
from salon.providers import OfflineProvider, ProviderSpec, ScriptedProvider, build_provider, scripted_reply
from salon.providers.offline import offline_answer


async def _collect(stream: AsyncIterator[ModelChunk]) -> tuple[list[str], list[ModelResult]]:
    texts: list[str] = []
    results: list[ModelResult] = []
    async for chunk in stream:
        if isinstance(chunk, TextDelta):
            assert not results, "text after the result"
            texts.append(chunk.text)
        else:
            results.append(chunk)
    return texts, results


def _request(*texts: str, system: str = "", max_tokens: int = 1024) -> ModelRequest:
    roles = ["user", "assistant"]
    messages = tuple(Message(roles[i % 2], t) for i, t in enumerate(texts))  # type: ignore[arg-type]
    return ModelRequest(system=system, messages=messages, max_tokens=max_tokens)


async def test_offline_says_what_it_is() -> None:
    texts, results = await _collect(OfflineProvider(token_delay_s=0).stream(_request("hello there")))
    answer = "".join(texts)
    assert answer.startswith("I am Salon's offline responder")
    assert "This is the first message of the session that I can see." in answer
    assert "You just said: “hello there”." in answer
    assert answer == offline_answer(_request("hello there"))
    [result] = results
    assert result.stop_reason == "end_turn"
    assert result.provider == "offline"
    assert result.output_tokens == len(texts)


async def test_offline_says_plainly_it_cannot_use_the_tools_offered() -> None:
    request = dataclasses.replace(_request("look up order 42"), tools=(ToolSpec("lookup_order"), ToolSpec("refund")))
    texts, results = await _collect(OfflineProvider(token_delay_s=0).stream(request))
    assert "I cannot use tools, so I did not call any of the ones offered (lookup_order, refund)." in "".join(texts)
    assert results[0].stop_reason == "end_turn", "it never calls one"
    assert "tools" not in offline_answer(_request("look up order 42"))


async def test_offline_mentions_earlier_user_messages() -> None:
    request = _request("my name is Ada", "noted", "I like tea", "ok", "what do you know?")
    answer = "".join((await _collect(OfflineProvider(token_delay_s=0).stream(request)))[0])
    assert "I remember 2 earlier message(s) of yours in this session" in answer
    assert "most recent first: “I like tea”; “my name is Ada”." in answer
    assert "noted" not in answer  # replies are not recalled as the user's
    assert "You just said: “what do you know?”." in answer


async def test_offline_recalls_only_the_last_three_and_the_system_prompt() -> None:
    request = _request("one", "r", "two", "r", "three", "r", "four", "r", "now", system="Be terse.")
    answer = offline_answer(request)
    assert "I remember 4 earlier message(s)" in answer
    assert "most recent first: “four”; “three”; “two”." in answer
    assert "“one”" not in answer
    assert "My instructions for this session begin: “Be terse.”." in answer


def test_offline_excerpts_long_messages() -> None:
    answer = offline_answer(_request("x" * 500))
    assert "x" * 119 + "…" in answer
    assert "x" * 120 not in answer


async def test_offline_respects_max_tokens() -> None:
    full = (await _collect(OfflineProvider(token_delay_s=0).stream(_request("hi"))))[0]
    assert len(full) > 5
    texts, [result] = await _collect(OfflineProvider(token_delay_s=0).stream(_request("hi", max_tokens=5)))
    assert texts == full[:5]
    assert result.stop_reason == "max_tokens"
    assert result.output_tokens == 5


async def test_offline_max_tokens_cap() -> None:
    provider = OfflineProvider(token_delay_s=0, max_tokens_cap=3)
    texts, [result] = await _collect(provider.stream(_request("hi", max_tokens=100)))
    assert len(texts) == 3
    assert result.stop_reason == "max_tokens"


async def test_offline_exact_fit_is_end_turn() -> None:
    full = (await _collect(OfflineProvider(token_delay_s=0).stream(_request("hi"))))[0]
    texts, [result] = await _collect(OfflineProvider(token_delay_s=0).stream(_request("hi", max_tokens=len(full))))
    assert texts == full
    assert result.stop_reason == "end_turn"


def test_offline_answer_without_messages() -> None:
    assert "first message" in offline_answer(ModelRequest(system="", messages=()))


def test_scripted_reply() -> None:
    assert scripted_reply("hello there world", 5) == ["hello ", "there ", "world ", "hello ", "there "]
    assert scripted_reply("   ", 2) == ["… ", "… "]
    assert scripted_reply("a", 0) == []


async def test_scripted_streams_its_reply_and_counts_calls() -> None:
    provider = ScriptedProvider(tokens=4)
    texts, [result] = await _collect(provider.stream(_request("earlier", "reply", "alpha beta")))
    assert texts == ["alpha ", "beta ", "alpha ", "beta "]
    assert (result.stop_reason, result.output_tokens, result.provider) == ("end_turn", 4, "scripted")
    assert provider.calls == 1


@pytest.mark.parametrize("fail_after", [0, 2, 4])
async def test_scripted_failure_after_k_tokens(fail_after: int) -> None:
    provider = ScriptedProvider(tokens=4, fail_after=fail_after)
    texts: list[str] = []
    with pytest.raises(ModelError) as info:
        async for chunk in provider.stream(_request("a b c d")):
            assert isinstance(chunk, TextDelta)
            texts.append(chunk.text)
    assert texts == ["a ", "b ", "c ", "d "][:fail_after]
    assert info.value.retryable
    assert info.value.reason == "MODEL_UNAVAILABLE"


def test_build_provider() -> None:
    assert isinstance(build_provider(ProviderSpec()), OfflineProvider)
    scripted = ProviderSpec(kind="scripted", scripted_tokens=3, scripted_fail_after=1).build()
    assert isinstance(scripted, ScriptedProvider)
    assert (scripted.tokens, scripted.fail_after) == (3, 1)
    with pytest.raises(ValueError, match="unknown model provider"):
        build_provider(ProviderSpec(kind="gpt"))


TOKENS = ["I ", "am ", "a ", "teapot ", "a ", "teapot"]


@pytest.mark.parametrize("sent", range(len(TOKENS) + 1))
def test_continue_after_skips_exactly_the_tokens_already_sent(sent: int) -> None:
    rest = continue_after(TOKENS, "".join(TOKENS[:sent]))
    assert rest == TOKENS[sent:]
    assert "".join(TOKENS[:sent]) + "".join(rest) == "".join(TOKENS)


def test_continue_after_never_drops_text_the_client_does_not_have() -> None:
    assert continue_after(TOKENS, "I a") == TOKENS[1:]  # ends inside "am ": that token is sent again, whole
    assert continue_after(TOKENS, "something else") == TOKENS  # not this answer: start over
    assert continue_after([], "I ") == []
    assert continue_after(["x"], "") == ["x"]


@pytest.mark.parametrize("sent", [0, 1, 3, 4])
async def test_scripted_continues_after_the_prefill(sent: int) -> None:
    provider = ScriptedProvider(tokens=4)
    full = scripted_reply("alpha beta gamma", 4)
    request = dataclasses.replace(_request("alpha beta gamma"), prefill="".join(full[:sent]))
    texts, [result] = await _collect(provider.stream(request))
    assert texts == full[sent:]
    assert (result.stop_reason, result.provider) == ("end_turn", "scripted")
    assert provider.calls == 1


async def test_scripted_failure_point_counts_the_prefilled_tokens() -> None:
    provider = ScriptedProvider(tokens=4, fail_after=3)
    request = dataclasses.replace(_request("a b c d"), prefill="a b ")
    texts: list[str] = []
    with pytest.raises(ModelError):
        async for chunk in provider.stream(request):
            assert isinstance(chunk, TextDelta)
            texts.append(chunk.text)
    assert texts == ["c "]  # a and b were prefilled; it still fails after 3 tokens of the whole answer


@pytest.mark.parametrize("sent", [0, 1, 7])
async def test_offline_continues_after_the_prefill(sent: int) -> None:
    provider = OfflineProvider(token_delay_s=0)
    full, [whole] = await _collect(provider.stream(_request("hello there")))
    request = dataclasses.replace(_request("hello there"), prefill="".join(full[:sent]))
    texts, [result] = await _collect(provider.stream(request))
    assert texts == full[sent:]
    assert "".join(full[:sent]) + "".join(texts) == offline_answer(_request("hello there"))
    assert result.stop_reason == whole.stop_reason == "end_turn"


async def test_offline_continuation_respects_max_tokens() -> None:
    provider = OfflineProvider(token_delay_s=0)
    capped, _ = await _collect(provider.stream(_request("hi", max_tokens=5)))
    request = dataclasses.replace(_request("hi", max_tokens=5), prefill="".join(capped[:2]))
    texts, [result] = await _collect(provider.stream(request))
    assert texts == capped[2:]
    assert result.stop_reason == "max_tokens"
    everything, [done] = await _collect(provider.stream(dataclasses.replace(request, prefill="".join(capped))))
    assert everything == []
    assert done.stop_reason == "max_tokens"
