"""Guardrails: cheap checks on what enters a session and what leaves it, configurable per tenant.

Plain Python (no gRPC, NATS or Ray): the gateway validates input characters with it, the session actor checks
user text and retrieved passages for prompt injection, redacts secrets and personal data from the model's
stream before any token leaves the engine, and watches the stream for the session's system-prompt canary.
Every decision is a :class:`GuardrailDecision` that names the check, the action and counts, never the
matched text.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage import InvalidArgument

log = logging.getLogger(__name__)

INJECTION_MODES = ("off", "flag", "block")


@dataclass(frozen=True, slots=True)
class GuardrailSettings:
    """A tenant's guardrails. The defaults are on where they are cheap: input character checks, injection
    flagging (the turn proceeds; the decision is recorded), redaction of secrets and personal data, canary."""

    injection: str = "flag"
    """What a likely prompt injection in user text or a retrieved passage does: off, flag or block."""
    injection_threshold: float = 1.0
    """Score at or above which text counts as a likely injection (one strong pattern scores 1.0)."""
    redact_secrets: bool = True
    """Replace API keys and ``key=value`` secrets in the model's output with ``[redacted:secret]``."""
    redact_pii: bool = True
    """Replace card numbers (Luhn-valid), e-mail addresses and phone numbers in the model's output."""
    canary: bool = True
    """Put a per-session canary token in the system prompt and stop the answer if the model repeats it."""
    block_control_chars: bool = True
    """Refuse input with control characters other than newline, tab and carriage return."""
    block_bidi: bool = True
    """Refuse input with bidirectional override or isolate characters (U+202A–U+202E, U+2066–U+2069)."""

    def __post_init__(self) -> None:
        if self.injection not in INJECTION_MODES:
            raise InvalidArgument(
                f"guardrails.injection must be one of {', '.join(INJECTION_MODES)}", reason="INVALID_CONFIG"
            )
        if not 0.0 < self.injection_threshold <= 100.0:
            raise InvalidArgument("guardrails.injection_threshold must be in (0, 100]", reason="INVALID_CONFIG")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GuardrailSettings:
        """Settings from a config table (e.g. ``[tenants.<id>.guardrails]``); keys left out keep their
        defaults. Unknown keys and values of the wrong type raise ``InvalidArgument`` (``INVALID_CONFIG``)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InvalidArgument(f"unknown guardrails setting(s): {', '.join(unknown)}", reason="INVALID_CONFIG")
        values: dict[str, Any] = {}
        for name, given in data.items():
            default, value = fields[name].default, given
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise InvalidArgument(f"guardrails.{name} must be true or false", reason="INVALID_CONFIG")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidArgument(f"guardrails.{name} must be a number", reason="INVALID_CONFIG")
                value = float(value)
            elif isinstance(default, str) and not isinstance(value, str):
                raise InvalidArgument(f"guardrails.{name} must be a string", reason="INVALID_CONFIG")
            values[name] = value
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a plain mapping (``from_mapping`` reads it back)."""
        return dataclasses.asdict(self)

    def to_header(self) -> str:
        """Compact JSON for the turn envelope's header; only settings that differ from the defaults."""
        defaults = GuardrailSettings()
        changed = {k: v for k, v in self.to_mapping().items() if getattr(defaults, k) != v}
        return json.dumps(changed, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_header(cls, value: str | None) -> GuardrailSettings:
        """Settings from :meth:`to_header` output. A missing header means the defaults. A header this version
        cannot read (e.g. a newer gateway's setting) keeps the settings it knows and is logged, never fails
        the turn: the defaults are the safe side."""
        if not value:
            return cls()
        try:
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("unreadable guardrails header; using the default guardrails")
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            log.warning("guardrails header names settings this version does not know; ignoring them")
        try:
            return cls.from_mapping({k: v for k, v in data.items() if k in known})
        except InvalidArgument:
            log.warning("invalid guardrails header; using the default guardrails")
            return cls()


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    """What one guardrail decided about a turn. Never carries the text that triggered it."""

    check: str
    """``injection``, ``redaction``, ``canary`` or ``input``."""
    action: str
    """``flag`` (recorded, the turn goes on), ``block`` (the turn ends) or ``redact`` (text replaced)."""
    reason: str
    """Stable UPPER_SNAKE_CASE reason, e.g. ``PROMPT_INJECTION``, ``SECRET``, ``CARD_NUMBER``."""
    source: str = ""
    """Where the text came from: ``user``, ``passage`` or ``output``."""
    count: int = 1
    """How many matches (redactions) or passages the decision covers."""
    score: float = 0.0
    """Injection score, when the check scores."""
    rules: tuple[str, ...] = ()
    """Names of the rules that matched (not the matched text)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ledger record)."""
        return {
            "check": self.check,
            "action": self.action,
            "reason": self.reason,
            "source": self.source,
            "count": self.count,
            "score": self.score,
            "rules": list(self.rules),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardrailDecision:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            check=str(data.get("check", "")),
            action=str(data.get("action", "")),
            reason=str(data.get("reason", "")),
            source=str(data.get("source", "")),
            count=int(data.get("count", 1)),
            score=float(data.get("score", 0.0)),
            rules=tuple(str(r) for r in data.get("rules", ())),
        )
