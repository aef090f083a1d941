"""Choosing a provider from configuration.

A :class:`ProviderSpec` is a small picklable description: the composition root builds it from config and
ships it to the session hosts (other processes), which build the provider there. A spec with a ``chain``
builds a :class:`~salon.providers.resilience.ProviderChain` holding every provider this deployment has
(the chain's, plus each one that is configured, so sessions may name them), each behind its own circuit
breaker; a spec without one builds the bare ``kind`` (tests and benchmarks of the offline and scripted ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from salon.actors.model import ModelProvider
from salon.providers.offline import OfflineProvider
from salon.providers.pricing import DEFAULT_PRICES, PriceTable
from salon.providers.resilience import ProviderChain, RetryPolicy
from salon.providers.scripted import ScriptedProvider

PROVIDERS = ("anthropic", "openai_compatible", "local", "offline", "scripted")
PROMPT_CACHE_MODES = ("off", "system", "conversation")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Which provider(s) to build and their parameters."""

    kind: str = "offline"
    scripted_tokens: int = 16
    scripted_first_token_delay_s: float = 0.0
    scripted_token_delay_s: float = 0.0
    scripted_fail_after: int | None = None
    offline_token_delay_s: float = 0.02
    chain: tuple[str, ...] = ()
    """Providers tried in order; empty: build ``kind`` alone, without retries or breaker."""
    anthropic_api_key: str = field(default="", repr=False)
    anthropic_model: str = ""
    anthropic_base_url: str = ""
    anthropic_prompt_cache: str = "conversation"
    openai_base_url: str = ""
    openai_model: str = ""
    openai_api_key: str = field(default="", repr=False)
    local_model_path: str = ""
    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    total_timeout_s: float = 240.0
    prices: str = DEFAULT_PRICES

    def __post_init__(self) -> None:
        unknown = [n for n in (self.kind, *self.chain) if n not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown model provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
        if self.anthropic_prompt_cache not in PROMPT_CACHE_MODES:
            raise ValueError(f"anthropic_prompt_cache must be one of {', '.join(PROMPT_CACHE_MODES)}")
        if "openai_compatible" in self.chain and not self.openai_base_url:
            raise ValueError("the openai_compatible provider needs openai_base_url")
        PriceTable.parse(self.prices)  # fail at start, not at the first turn

    def build(self) -> ModelProvider:
        """Build the provider this spec describes."""
        return build_provider(self)

    def available(self) -> tuple[str, ...]:
        """Every provider a session may name: the chain's, plus the configured ones and the offline responder."""
        names = list(self.chain)
        if self.anthropic_model and self.anthropic_api_key:
            names.append("anthropic")
        if self.openai_base_url:
            names.append("openai_compatible")
        names.append("offline")
        return tuple(dict.fromkeys(names))


def build_provider(spec: ProviderSpec) -> ModelProvider:
    """Build the provider ``spec`` describes; raise ``ValueError`` for an unknown kind."""
    if not spec.chain:
        return _build_one(spec.kind, spec, PriceTable.parse(spec.prices))
    prices = PriceTable.parse(spec.prices)
    return ProviderChain(
        {name: _build_one(name, spec, prices) for name in spec.available()},
        spec.chain,
        retry=RetryPolicy(
            max_attempts=spec.max_attempts,
            base_delay_s=spec.backoff_base_s,
            max_delay_s=spec.backoff_max_s,
            max_retry_after_s=spec.max_retry_after_s,
        ),
        failure_threshold=spec.breaker_failures,
        cooldown_s=spec.breaker_cooldown_s,
        total_timeout_s=spec.total_timeout_s or None,
    )


def _build_one(kind: str, spec: ProviderSpec, prices: PriceTable) -> ModelProvider:
    if kind == "offline":
        return OfflineProvider(token_delay_s=spec.offline_token_delay_s)
    if kind == "scripted":
        return ScriptedProvider(
            tokens=spec.scripted_tokens,
            first_token_delay_s=spec.scripted_first_token_delay_s,
            token_delay_s=spec.scripted_token_delay_s,
            fail_after=spec.scripted_fail_after,
        )
    if kind == "anthropic":
        # Imported here: the SDK takes seconds to import, and only processes that use it should pay.
        from salon.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            model=spec.anthropic_model,
            api_key=spec.anthropic_api_key,
            base_url=spec.anthropic_base_url,
            prompt_cache=spec.anthropic_prompt_cache,
            idle_timeout_s=spec.idle_timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            prices=prices,
        )
    if kind == "openai_compatible":
        from salon.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            base_url=spec.openai_base_url,
            model=spec.openai_model,
            api_key=spec.openai_api_key,
            idle_timeout_s=spec.idle_timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            prices=prices,
        )
    if kind == "local":
        from salon.providers.local import LocalLlamaProvider

        return LocalLlamaProvider(model_path=spec.local_model_path)
    raise ValueError(f"unknown model provider {kind!r}; known: {', '.join(PROVIDERS)}")
