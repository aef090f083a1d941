"""How model API failures become :class:`~salon.actors.model.ModelError`: one vocabulary of reasons for every provider
(the ``MODEL_`` members of :class:`~salon.storage.reasons.Reason`, named here without the prefix).

``retryable`` means "the same request may succeed if sent again later"; the resilience layer decides whether it
is sent again (only before the first token reached the session) and whether another provider is tried.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from salon.actors.model import ModelError
from salon.storage.reasons import Reason

RATE_LIMITED = Reason.MODEL_RATE_LIMITED
"""429 with a retry hint: the provider asks us to slow down."""
QUOTA_EXHAUSTED = Reason.MODEL_QUOTA_EXHAUSTED
"""429 without a retry hint, or a spend-limit code: waiting will not help soon."""
OVERLOADED = Reason.MODEL_OVERLOADED
"""529 / ``overloaded_error``: the provider is busy."""
UNAVAILABLE = Reason.MODEL_UNAVAILABLE
"""5xx, connection refused or dropped, a stream that ended early."""
STALLED = Reason.MODEL_STALLED
"""No bytes from the provider for the idle timeout."""
TIMEOUT = Reason.MODEL_TIMEOUT
"""The turn's total model time ran out."""
AUTH_FAILED = Reason.MODEL_AUTH_FAILED
"""401/403: the key is missing, wrong or lacks permission."""
INVALID_REQUEST = Reason.MODEL_INVALID_REQUEST
"""400/404/413/422: the request itself is wrong (bad model name, prompt too long)."""
PROTOCOL_ERROR = Reason.MODEL_PROTOCOL_ERROR
"""The provider answered something that is not its protocol."""
CIRCUIT_OPEN = Reason.MODEL_CIRCUIT_OPEN
"""Every provider of the chain is failing: their circuit breakers are open."""
NOT_CONFIGURED = Reason.MODEL_NOT_CONFIGURED
"""The session asked for providers this deployment does not have, or a provider lacks its model name."""

CALLER_FAULTS = frozenset({INVALID_REQUEST, NOT_CONFIGURED})
"""Reasons that say nothing about the provider's health: they do not count against its circuit breaker."""

_SPEND_LIMIT_CODES = frozenset(
    {"enforced_spend_limit_reached", "contract_spend_limit_reached", "linked_organization_spend_limit_reached"}
)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None when absent
    or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def http_error(
    status: int,
    *,
    error_type: str | None = None,
    error_code: str | None = None,
    retry_after_s: float | None = None,
    provider: str,
) -> ModelError:
    """The :class:`ModelError` for an HTTP error status (or an in-stream error ``error_type``, with status 200)."""
    what = f"{provider} answered {status}" + (f" ({error_type})" if error_type else "")
    if status == 429 or error_type == "rate_limit_error":
        if error_code in _SPEND_LIMIT_CODES or retry_after_s is None:
            # A spend limit (or a 429 that gives no hint) will not clear by retrying in a few seconds.
            return ModelError(what + ": usage limit reached", reason=QUOTA_EXHAUSTED, retryable=False)
        return ModelError(what + ": rate limited", reason=RATE_LIMITED, retryable=True, retry_after_s=retry_after_s)
    if status == 529 or error_type == "overloaded_error":
        return ModelError(what + ": overloaded", reason=OVERLOADED, retryable=True, retry_after_s=retry_after_s)
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        return ModelError(what + ": not authorised", reason=AUTH_FAILED)
    if status == 402 or error_type == "billing_error":
        return ModelError(what + ": billing problem", reason=QUOTA_EXHAUSTED)
    if status in (408, 409) or status >= 500 or error_type in ("api_error", "timeout_error"):
        return ModelError(what + ": unavailable", reason=UNAVAILABLE, retryable=True, retry_after_s=retry_after_s)
    if 400 <= status < 500 or error_type in ("invalid_request_error", "not_found_error", "request_too_large"):
        return ModelError(what + ": request rejected", reason=INVALID_REQUEST)
    # An error event of a type we do not know, on a 200 stream: assume the provider's side.
    return ModelError(what, reason=UNAVAILABLE, retryable=True, retry_after_s=retry_after_s)


def stalled(provider: str, idle_timeout_s: float) -> ModelError:
    """The error for a stream that sent no bytes for ``idle_timeout_s``."""
    return ModelError(f"{provider} sent nothing for {idle_timeout_s:g} s", reason=STALLED, retryable=True)


def connection_lost(provider: str, detail: str) -> ModelError:
    """The error for a connection that failed or dropped."""
    return ModelError(f"{provider} connection failed: {detail}", reason=UNAVAILABLE, retryable=True)


def protocol_error(provider: str, detail: str) -> ModelError:
    """The error for an answer that breaks the provider's protocol."""
    return ModelError(f"{provider} broke its protocol: {detail}", reason=PROTOCOL_ERROR, retryable=True)
