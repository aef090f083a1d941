"""Provider settings: the price table, the spec built from config, the factory, and the local provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from salon.actors.model import Message, ModelError, ModelRequest, ModelResult, TextDelta
from salon.engine.config import Config
from salon.providers import OfflineProvider, ProviderSpec, ScriptedProvider, errors
from salon.providers.anthropic import AnthropicProvider
from salon.providers.local import LocalLlamaProvider
from salon.providers.openai_compatible import OpenAICompatibleProvider
from salon.providers.pricing import DEFAULT_PRICES, PriceTable
from salon.providers.resilience import ProviderChain
from salon.storage.errors import InvalidArgument

# pricing


def test_price_table_parses_and_picks_the_longest_prefix() -> None:
    table = PriceTable.parse("claude=1/2; claude-opus=10/20/1/12.5 ;")
    opus = table.price("claude-opus-4-20250514")
    assert opus is not None and (opus.input, opus.output, opus.cache_read, opus.cache_write) == (10, 20, 1, 12.5)
    other = table.price("claude-haiku")
    assert other is not None and other.cache_read == pytest.approx(0.1) and other.cache_write == 1.25
    assert table.price("llama") is None
    assert table.cost("llama", input_tokens=10**6, output_tokens=10**6) == 0
    assert table.cost("claude-x", input_tokens=10**6, output_tokens=10**6) == 3


@pytest.mark.parametrize("bad", ["claude", "=1/2", "m=1", "m=1/2/3/4/5", "m=a/b", "m=-1/2"])
def test_malformed_prices_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="price entry"):
        PriceTable.parse(bad)


def test_default_prices_cover_current_claude_models() -> None:
    table = PriceTable.parse(DEFAULT_PRICES)
    sonnet = table.price("claude-sonnet-4-5-20250929")
    assert sonnet is not None and (sonnet.input, sonnet.output) == (3, 15)
    haiku = table.price("claude-haiku-4-5")
    assert haiku is not None and (haiku.input, haiku.output) == (1, 5)


# config → spec


def test_default_config_builds_the_bare_offline_responder() -> None:
    spec = Config().provider_spec()
    assert (spec.kind, spec.chain) == ("offline", ())
    assert isinstance(spec.build(), OfflineProvider)


def test_anthropic_key_and_model_put_claude_first_with_the_offline_fallback() -> None:
    config = Config.load(env={"ANTHROPIC_API_KEY": "sk-secret", "SALON_ANTHROPIC_MODEL": "claude-x"})
    spec = config.provider_spec()
    assert spec.chain == ("anthropic", "offline")
    assert spec.anthropic_api_key == "sk-secret"
    assert "sk-secret" not in repr(config) and "sk-secret" not in repr(spec)
    # A key alone (no model) changes nothing: the deployment must name a model.
    assert Config.load(env={"ANTHROPIC_API_KEY": "sk"}).provider_spec().chain == ()


def test_openai_base_url_joins_the_automatic_chain() -> None:
    config = Config(
        anthropic_api_key="k", anthropic_model="claude-x", openai_base_url="http://127.0.0.1:9/v1", openai_model="m"
    )
    assert config.provider_spec().chain == ("anthropic", "openai_compatible", "offline")
    assert Config(openai_base_url="http://h/v1", model_provider="scripted").provider_spec().chain == (
        "openai_compatible",
        "scripted",
    )


def test_explicit_chain_and_single_real_provider() -> None:
    config = Config(model_chain=" openai_compatible , offline,offline", openai_base_url="http://h/v1")
    assert config.provider_spec().chain == ("openai_compatible", "offline")
    assert Config(model_provider="anthropic", anthropic_model="m").provider_spec().chain == ("anthropic",)


def test_resilience_settings_reach_the_spec() -> None:
    spec = Config(
        model_provider="anthropic",
        model_max_attempts=5,
        model_breaker_failures=7,
        model_breaker_cooldown_s=3.0,
        model_idle_timeout_s=4.0,
        model_total_timeout_s=0.0,
        anthropic_prompt_cache="system",
    ).provider_spec()
    assert (spec.max_attempts, spec.breaker_failures, spec.breaker_cooldown_s) == (5, 7, 3.0)
    assert (spec.idle_timeout_s, spec.total_timeout_s, spec.anthropic_prompt_cache) == (4.0, 0.0, "system")


@pytest.mark.parametrize(
    "settings",
    [
        {"model_chain": "anthropic,gpt"},
        {"model_provider": "gpt"},
        {"model_chain": "openai_compatible"},  # no base URL
        {"model_prices": "claude=cheap"},
        {"model_provider": "anthropic", "anthropic_prompt_cache": "always"},
    ],
)
def test_bad_provider_settings_fail_at_start(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as info:
        Config(**settings).provider_spec()
    assert info.value.reason == "INVALID_CONFIG"


# factory


def test_a_chain_holds_every_configured_provider_behind_breakers() -> None:
    spec = ProviderSpec(
        kind="anthropic",
        chain=("anthropic", "offline"),
        anthropic_api_key="k",
        anthropic_model="claude-x",
        openai_base_url="http://127.0.0.1:9/v1",
        breaker_failures=2,
        total_timeout_s=9,
    )
    provider = spec.build()
    assert isinstance(provider, ProviderChain)
    assert provider.default_chain == ("anthropic", "offline")
    assert set(provider.providers) == {"anthropic", "openai_compatible", "offline"}
    assert isinstance(provider.providers["anthropic"], AnthropicProvider)
    assert isinstance(provider.providers["openai_compatible"], OpenAICompatibleProvider)
    assert provider.breakers["anthropic"].failure_threshold == 2
    assert provider.total_timeout_s == 9
    assert provider.breaker_states() == {"anthropic": "closed", "openai_compatible": "closed", "offline": "closed"}


def test_scripted_and_local_can_be_chained() -> None:
    provider = ProviderSpec(kind="scripted", chain=("scripted", "local"), scripted_tokens=2).build()
    assert isinstance(provider, ProviderChain)
    assert isinstance(provider.providers["scripted"], ScriptedProvider)
    assert isinstance(provider.providers["local"], LocalLlamaProvider)


def test_unknown_kinds_are_rejected_by_the_spec() -> None:
    with pytest.raises(ValueError, match="unknown model provider"):
        ProviderSpec(chain=("offline", "gpt"))


# local (llama.cpp replaced by a fake: the real one is an optional extra, compiled on install)


class FakeLlama:
    """Yields chat completion chunks like llama-cpp-python, one per token, and records when it stops."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.produced = 0
        self.stopped = threading.Event()
        self.kwargs: dict[str, Any] = {}

    def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.kwargs = kwargs

        def chunks() -> Iterator[dict[str, Any]]:
            try:
                for i in range(self.tokens):
                    self.produced += 1
                    yield {"choices": [{"delta": {"content": f"t{i} "}, "finish_reason": None}]}
                yield {"choices": [{"delta": {}, "finish_reason": "length"}]}
            finally:
                self.stopped.set()

        return chunks()


async def test_local_provider_streams_from_the_model_in_a_thread() -> None:
    llama = FakeLlama(3)
    provider = LocalLlamaProvider(model_path="/models/x.gguf", loader=lambda *_: llama)
    request = ModelRequest(system="s", messages=(Message("user", "hi"),), temperature=0.1, stop_sequences=("X",))
    chunks = [c async for c in provider.stream(request)]
    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["t0 ", "t1 ", "t2 "]
    result = chunks[-1]
    assert isinstance(result, ModelResult)
    assert (result.stop_reason, result.output_tokens, result.provider, result.model) == (
        "max_tokens",
        3,
        "local",
        "x.gguf",
    )
    assert llama.kwargs["messages"][0] == {"role": "system", "content": "s"}
    assert (llama.kwargs["temperature"], llama.kwargs["stop"]) == (0.1, ["X"])


async def test_closing_the_local_stream_stops_generation() -> None:
    llama = FakeLlama(1_000_000)
    provider = LocalLlamaProvider(model_path="x.gguf", loader=lambda *_: llama)
    stream = provider.stream(ModelRequest(system="", messages=(Message("user", "hi"),)))
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(llama.stopped.wait, 10)
    assert llama.produced < 1_000_000


async def test_local_provider_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from salon.providers import local

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as info:
        local.bundled_model_path()
    assert info.value.reason == errors.NOT_CONFIGURED
    assert "local-llm" in info.value.message
