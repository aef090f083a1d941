"""Tenants: their API keys, limits and guardrail settings, from a TOML file re-read when it changes.

The file (``tenants_file``)::

    [tenants.acme]
    keys = [
      { id = "3f9c0a1b2c4d", sha256 = "<hex of SHA-256 of the whole key>" },
      { id = "77aa01bb02cc", sha256 = "...", admin = true },   # may read every tenant's usage
    ]
    [tenants.acme.limits]          # any of these; 0 = no limit; left out = the config's default
    turns_per_minute = 60
    concurrent_turns = 4
    tokens_per_day = 200000
    max_message_bytes = 8192
    max_sessions = 1000
    [tenants.acme.guardrails]      # actors.guardrails.GuardrailSettings fields
    injection = "block"
    [tenants.acme.mcp_servers.crm] # the tenant's own MCP servers (providers.mcp.config: command or url, ...)
    url = "https://crm.acme.example/mcp"

Keys are ``salon_<12 hex id>_<secret>`` with 256 random bits (``salon keys new``). Only a SHA-256 digest is
stored: a key is as random as a 256-bit secret, so a slow password hash (scrypt, argon2) would add nothing
against brute force while costing milliseconds on every call. The id names a key in logs and in the file
without its secret; deleting its line revokes it. Editing the file rotates keys without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salon.actors import GuardrailSettings
from salon.engine.session_tokens import TokenClaims
from salon.otel import stop_tasks
from salon.providers.mcp.config import McpServerConfig, parse_servers
from salon.storage.errors import InvalidArgument
from salon.storage.ids import is_valid_id
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

KEY_PREFIX = "salon_"
KEY_ID_CHARS = 12
_KEY_ID_ALPHABET = frozenset("0123456789abcdef")
# A digest compared against when a key's id is unknown, so an unknown id costs the same as a wrong secret.
_DUMMY_DIGEST = hashlib.sha256(b"salon: no such key").digest()


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits; 0 means no limit."""

    turns_per_minute: int = 0
    concurrent_turns: int = 0
    tokens_per_day: int = 0
    max_message_bytes: int = 0
    max_sessions: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], defaults: Limits) -> Limits:
        """Limits from a ``[tenants.<id>.limits]`` table; keys left out keep ``defaults``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"unknown limits: {', '.join(unknown)}", reason=Reason.INVALID_CONFIG)
        values = {name: getattr(defaults, name) for name in known}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"limits.{name} must be a whole number >= 0", reason=Reason.INVALID_CONFIG)
            values[name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the tenant, and which credential said so (a key id, a certificate or a session token's id;
    never a secret). ``token`` holds a session token's claims: such a caller is held to them
    (``engine.token_scope``)."""

    tenant_id: str
    credential: str = ""
    admin: bool = False
    token: TokenClaims | None = None


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What applies to one tenant."""

    tenant_id: str
    limits: Limits = field(default_factory=Limits)
    guardrails: GuardrailSettings = field(default_factory=GuardrailSettings)
    mcp_servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    """The tenant's own MCP servers (its sessions may also name the deployment's)."""


@dataclass(frozen=True, slots=True)
class _Key:
    key_id: str
    tenant_id: str
    digest: bytes
    admin: bool


@dataclass(frozen=True)
class TenantTable:
    """One reading of the tenants file (immutable; a reload replaces it whole)."""

    policies: Mapping[str, TenantPolicy] = field(default_factory=dict)
    keys: Mapping[str, _Key] = field(default_factory=dict)


def new_key() -> tuple[str, str, str]:
    """A new API key: ``(key, key id, hex SHA-256 digest to put in the tenants file)``."""
    key_id = secrets.token_hex(KEY_ID_CHARS // 2)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key, key_id, hash_key(key)


def hash_key(key: str) -> str:
    """The digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id part of a well-formed key, else None."""
    head = len(KEY_PREFIX)
    if (
        len(key) < head + KEY_ID_CHARS + 2
        or not key.startswith(KEY_PREFIX)
        or key[head + KEY_ID_CHARS] != "_"
        or not set(key[head : head + KEY_ID_CHARS]) <= _KEY_ID_ALPHABET
    ):
        return None
    return key[head : head + KEY_ID_CHARS]


def parse_tenants(data: Mapping[str, Any], default_limits: Limits) -> TenantTable:
    """Check and index a parsed tenants file; :class:`InvalidArgument` (``INVALID_CONFIG``) names the problem."""
    unknown = sorted(set(data) - {"tenants"})
    if unknown:
        raise InvalidArgument(f"unknown tables in the tenants file: {', '.join(unknown)}", reason=Reason.INVALID_CONFIG)
    tenants = data.get("tenants", {})
    if not isinstance(tenants, Mapping):
        raise InvalidArgument("tenants must be a table", reason=Reason.INVALID_CONFIG)
    policies: dict[str, TenantPolicy] = {}
    keys: dict[str, _Key] = {}
    for tenant_id, table in tenants.items():
        policies[tenant_id], entries = _parse_tenant(tenant_id, table, default_limits)
        for key in entries:
            if key.key_id in keys:
                raise InvalidArgument(f"key id {key.key_id} appears twice", reason=Reason.INVALID_CONFIG)
            keys[key.key_id] = key
    return TenantTable(policies, keys)


def _parse_tenant(tenant_id: str, table: Any, default_limits: Limits) -> tuple[TenantPolicy, list[_Key]]:
    """One tenant's table: its policy and its keys."""
    if not is_valid_id(tenant_id):
        raise InvalidArgument("tenant ids must be 1-64 characters of [A-Za-z0-9_-]", reason=Reason.INVALID_CONFIG)
    if not isinstance(table, Mapping):
        raise InvalidArgument(f"tenants.{tenant_id} must be a table", reason=Reason.INVALID_CONFIG)
    extra = sorted(set(table) - {"keys", "limits", "guardrails", "mcp_servers"})
    if extra:
        names = ", ".join(extra)
        raise InvalidArgument(f"unknown settings in tenants.{tenant_id}: {names}", reason=Reason.INVALID_CONFIG)
    try:
        policy = TenantPolicy(
            tenant_id,
            Limits.from_mapping(_table(table, "limits"), default_limits),
            GuardrailSettings.from_mapping(_table(table, "guardrails")),
            parse_servers(_table(table, "mcp_servers"), "mcp_servers"),
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"tenants.{tenant_id}: {exc.message}", reason=Reason.INVALID_CONFIG) from None
    entries = table.get("keys", [])
    if not isinstance(entries, list):
        raise InvalidArgument(f"tenants.{tenant_id}.keys must be a list", reason=Reason.INVALID_CONFIG)
    return policy, [_parse_key(tenant_id, entry) for entry in entries]


def _table(table: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = table.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be a table", reason=Reason.INVALID_CONFIG)
    return value


def _parse_key(tenant_id: str, entry: Any) -> _Key:
    where = f"a key of tenants.{tenant_id}"
    if not isinstance(entry, Mapping) or set(entry) - {"id", "sha256", "admin"}:
        raise InvalidArgument(f"{where} must be {{ id, sha256[, admin] }}", reason=Reason.INVALID_CONFIG)
    key_id, digest, admin = entry.get("id"), entry.get("sha256"), entry.get("admin", False)
    if not isinstance(key_id, str) or len(key_id) != KEY_ID_CHARS or not set(key_id) <= _KEY_ID_ALPHABET:
        raise InvalidArgument(f"{where}: id must be {KEY_ID_CHARS} hex digits", reason=Reason.INVALID_CONFIG)
    try:
        raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != hashlib.sha256().digest_size:
        raise InvalidArgument(f"{where}: sha256 must be 64 hex digits", reason=Reason.INVALID_CONFIG)
    if not isinstance(admin, bool):
        raise InvalidArgument(f"{where}: admin must be true or false", reason=Reason.INVALID_CONFIG)
    return _Key(key_id, tenant_id, raw, admin)


class TenantRegistry:
    """The tenants in force. Lifecycle: :meth:`load` (raises on a bad file), :meth:`start` (watch the file),
    :meth:`close`. A file that turns bad while running is logged and ignored: the last good reading stays."""

    def __init__(self, path: str | Path | None, default_limits: Limits, *, reload_interval_s: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self._defaults = default_limits
        self._interval = reload_interval_s
        self._table = TenantTable()
        self._raw: bytes | None = None
        self._seen: bytes | None = None
        self._watch: asyncio.Task[None] | None = None
        self.generation = 0
        """How many readings took effect (tests wait on it)."""
        self.rejected = 0
        """How many changed readings were refused as invalid while running."""

    def load(self) -> None:
        """Read the file now (if there is one); :class:`InvalidArgument` if it is unreadable or invalid."""
        if self.path is None:
            return
        try:
            raw = self.path.read_bytes()
        except OSError:
            raise InvalidArgument("the tenants file cannot be read", reason=Reason.INVALID_CONFIG) from None
        if raw == self._seen:
            return  # unchanged (or the same bad edit, already reported)
        self._seen = raw
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            raise InvalidArgument("the tenants file is not valid TOML", reason=Reason.INVALID_CONFIG) from None
        self._table = parse_tenants(data, self._defaults)
        self._raw = raw
        self.generation += 1
        log.info("tenants file read: %d tenants, %d keys", len(self._table.policies), len(self._table.keys))

    def start(self) -> None:
        """Watch the file and take up every valid change (no restart needed to rotate keys)."""
        if self.path is not None and self._watch is None:
            self._watch = asyncio.create_task(self._watch_file(), name="salon-tenants-watch")

    async def close(self) -> None:
        """Stop watching. Idempotent."""
        task, self._watch = self._watch, None
        if task is not None:
            await stop_tasks([task])

    async def _watch_file(self) -> None:
        # Polling the (small) file's bytes: works on every filesystem and catches in-place edits and atomic
        # renames alike, where mtime granularity or inotify across renames would miss some.
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.load()
            except InvalidArgument as exc:
                self.rejected += 1
                if self._raw is not None:
                    log.error("tenants file change ignored (%s); the previous one stays in force", exc.message)

    def policy(self, tenant_id: str) -> TenantPolicy:
        """The tenant's policy; a tenant not in the file gets the defaults."""
        policy = self._table.policies.get(tenant_id)
        return policy if policy is not None else TenantPolicy(tenant_id, self._defaults)

    def mcp_servers_for(self, tenant_id: str) -> Mapping[str, McpServerConfig]:
        """The tenant's own MCP servers (none when the file names none)."""
        return self.policy(tenant_id).mcp_servers

    def all_mcp_servers(self) -> dict[str, dict[str, McpServerConfig]]:
        """Every tenant's own MCP servers, by tenant (what the hosts are built with)."""
        return {t: dict(p.mcp_servers) for t, p in self._table.policies.items() if p.mcp_servers}

    def guardrails_for(self, tenant_id: str) -> GuardrailSettings:
        """The tenant's guardrail settings (the defaults when the file says nothing)."""
        return self.policy(tenant_id).guardrails

    def is_listed(self, tenant_id: str) -> bool:
        """Whether the file names this tenant."""
        return tenant_id in self._table.policies

    def tenant_ids(self) -> list[str]:
        """The tenants the file names."""
        return sorted(self._table.policies)

    def verify_key(self, key: str) -> Identity | None:
        """The identity behind ``key``, or None when it is malformed, unknown or revoked (same cost each way)."""
        key_id = key_id_of(key)
        entry = self._table.keys.get(key_id) if key_id is not None else None
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        ok = hmac.compare_digest(digest, entry.digest if entry is not None else _DUMMY_DIGEST)
        if entry is None or not ok:
            return None
        return Identity(entry.tenant_id, credential=f"key:{entry.key_id}", admin=entry.admin)


def key_entry_toml(tenant_id: str, key_id: str, digest: str, *, admin: bool = False) -> str:
    """The line to add under ``[tenants.<tenant_id>] keys = [...]`` for a new key."""
    extra = ", admin = true" if admin else ""
    return f'{{ id = "{key_id}", sha256 = "{digest}"{extra} }},'
