"""Model providers: implementations of :class:`salon.actors.ModelProvider` and the factory that picks one.

The Anthropic, OpenAI-compatible and local providers live in their own modules (``providers.anthropic``,
``.openai_compatible``, ``.local``) and are imported only by the processes that build them: the anthropic SDK
alone takes seconds to import.
"""

from salon.providers import errors
from salon.providers.factory import PROVIDERS, ProviderSpec, build_provider
from salon.providers.offline import OfflineProvider
from salon.providers.pricing import PriceTable
from salon.providers.resilience import (
    BreakerState,
    CircuitBreaker,
    ProviderChain,
    RetryPolicy,
    provider_breaker_states,
    provider_stats,
)
from salon.providers.scripted import ScriptedProvider, scripted_reply

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
