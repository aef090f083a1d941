"""The engine: configuration, the gRPC gateway, model providers, and the composition root.

Exports are loaded on first use, so importing one part (say the config or the providers) does not pull in
gRPC, Ray and NATS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.config import Config
    from engine.gateway import Gateway
    from engine.nats_server import EmbeddedNats
    from engine.providers import OfflineProvider, ProviderSpec, ScriptedProvider

_EXPORTS = {
    "Config": "engine.config",
    "Engine": "engine.app",
    "EmbeddedNats": "engine.nats_server",
    "Gateway": "engine.gateway",
    "OfflineProvider": "engine.providers",
    "ProviderSpec": "engine.providers",
    "ScriptedProvider": "engine.providers",
}

__all__ = ["Config", "EmbeddedNats", "Engine", "Gateway", "OfflineProvider", "ProviderSpec", "ScriptedProvider"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
