"""The engine: configuration, the gRPC gateway, and the composition root.

Exports are loaded on first use, so importing one part (say the config) does not pull in
gRPC, Ray and NATS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salon.engine.app import Engine
    from salon.engine.auth import Authenticator, AuthInterceptor, caller_tenant
    from salon.engine.config import Config
    from salon.engine.gateway import Gateway
    from salon.engine.limits import TenantLimiter
    from salon.engine.nats_server import EmbeddedNats
    from salon.engine.tenants import Identity, Limits, TenantRegistry

_EXPORTS = {
    "AuthInterceptor": "salon.engine.auth",
    "Authenticator": "salon.engine.auth",
    "Config": "salon.engine.config",
    "Engine": "salon.engine.app",
    "EmbeddedNats": "salon.engine.nats_server",
    "Gateway": "salon.engine.gateway",
    "Identity": "salon.engine.tenants",
    "Limits": "salon.engine.tenants",
    "TenantLimiter": "salon.engine.limits",
    "TenantRegistry": "salon.engine.tenants",
    "caller_tenant": "salon.engine.auth",
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
