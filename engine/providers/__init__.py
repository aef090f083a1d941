"""Model providers: implementations of :class:`actors.ModelProvider` and the factory that picks one.

The Anthropic, OpenAI-compatible and local providers live in their own modules (``engine.providers.anthropic``,
``.openai_compatible``, ``.local``) and are imported only by the processes that build them: the anthropic SDK
alone takes seconds to import.
"""

from engine.providers import errors
from engine.providers.factory import PROVIDERS, ProviderSpec, build_provider
from engine.providers.offline import OfflineProvider
from engine.providers.pricing import PriceTable
from engine.providers.resilience import (
    BreakerState,
    CircuitBreaker,
    ProviderChain,
    RetryPolicy,
    provider_breaker_states,
    provider_stats,
)
from engine.providers.scripted import ScriptedProvider, scripted_reply

__all__ = [
    "PROVIDERS",
    "BreakerState",
    "CircuitBreaker",
    "OfflineProvider",
    "PriceTable",
    "ProviderChain",
    "ProviderSpec",
    "RetryPolicy",
    "ScriptedProvider",
    "build_provider",
    "errors",
    "provider_breaker_states",
    "provider_stats",
    "scripted_reply",
]
