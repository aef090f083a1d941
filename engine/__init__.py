"""The engine: configuration, the gRPC gateway, and the composition root.

Exports are loaded on first use, so importing one part (say the config) does not pull in
gRPC, Ray and NATS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.auth import Authenticator, AuthInterceptor, caller_tenant
    from engine.config import Config
    from engine.gateway import Gateway
    from engine.limits import TenantLimiter
    from engine.nats_server import EmbeddedNats
    from engine.tenants import Identity, Limits, TenantRegistry

_EXPORTS = {
    "AuthInterceptor": "engine.auth",
    "Authenticator": "engine.auth",
    "Config": "engine.config",
    "Engine": "engine.app",
    "EmbeddedNats": "engine.nats_server",
    "Gateway": "engine.gateway",
    "Identity": "engine.tenants",
    "Limits": "engine.tenants",
    "TenantLimiter": "engine.limits",
    "TenantRegistry": "engine.tenants",
    "caller_tenant": "engine.auth",
}

__all__ = [
    "AuthInterceptor",
    "Authenticator",
    "Config",
    "EmbeddedNats",
    "Engine",
    "Gateway",
    "Identity",
    "Limits",
    "TenantLimiter",
    "TenantRegistry",
    "caller_tenant",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
