"""Choosing a provider from configuration.

A :class:`ProviderSpec` is a small picklable description: the composition root builds it from config and
ships it to the session hosts (other processes), which build the provider there.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.model import ModelProvider
from engine.providers.offline import OfflineProvider
from engine.providers.scripted import ScriptedProvider

PROVIDERS = ("offline", "scripted")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Which provider to build and its parameters."""

    kind: str = "offline"
    scripted_tokens: int = 16
    scripted_first_token_delay_s: float = 0.0
    scripted_token_delay_s: float = 0.0
    scripted_fail_after: int | None = None
    offline_token_delay_s: float = 0.02

    def build(self) -> ModelProvider:
        """Build the provider this spec describes."""
        return build_provider(self)


def build_provider(spec: ProviderSpec) -> ModelProvider:
    """Build the provider ``spec`` describes; raise ``ValueError`` for an unknown kind."""
    if spec.kind == "offline":
        return OfflineProvider(token_delay_s=spec.offline_token_delay_s)
    if spec.kind == "scripted":
        return ScriptedProvider(
            tokens=spec.scripted_tokens,
            first_token_delay_s=spec.scripted_first_token_delay_s,
            token_delay_s=spec.scripted_token_delay_s,
            fail_after=spec.scripted_fail_after,
        )
    raise ValueError(f"unknown model provider {spec.kind!r}; known: {', '.join(PROVIDERS)}")
