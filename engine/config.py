"""Configuration: one frozen object built from an optional TOML file and ``SALON_*`` environment variables.

Precedence: environment over file over defaults. Every field documents itself (``help``), which feeds
``salon config`` and the README's table.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from engine.providers import ProviderSpec
from storage.errors import InvalidArgument
from storage.ids import is_valid_id


def _setting(default: Any, help: str, env: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class Config:
    """Every engine setting. Build with :meth:`Config.load`; derive variants with :meth:`replace`."""

    data_dir: str = _setting(".salon", "Directory for the embedded NATS store and local data.")
    grpc_host: str = _setting("127.0.0.1", "Address the gRPC gateway listens on.")
    grpc_port: int = _setting(50051, "gRPC port (0 picks a free one).")
    nats_url: str = _setting("", "NATS server to use; empty starts an embedded nats-server on loopback.")
    nats_server_bin: str = _setting("", "Path of the nats-server binary for the embedded server; empty finds it.")
    namespace: str = _setting(
        "salon", "Prefix of every NATS subject, stream and bucket, so deployments can share a NATS cluster."
    )
    ray_address: str = _setting("", "Ray cluster to join; empty starts Ray locally on loopback.", env="RAY_ADDRESS")
    num_hosts: int = _setting(2, "Session host actors (Ray actors, one process each).")
    num_shards: int = _setting(16, "Turn shards; each host owns num_shards / num_hosts of them.")
    default_tenant: str = _setting("default", "Tenant of every call until authentication is configured.")
    max_text_bytes: int = _setting(32768, "Largest user message accepted, in bytes of UTF-8.")
    turn_timeout_s: float = _setting(300.0, "Longest a SendTurn waits for its turn to end.")
    dedupe_window_s: float = _setting(600.0, "How long JetStream remembers a turn id to drop duplicates.")
    event_retention_s: float = _setting(900.0, "How long a turn's events stay replayable.")
    ack_wait_s: float = _setting(30.0, "Redelivery timeout of an unacknowledged turn (renewed while it runs).")
    ledger_retention_s: float = _setting(
        30 * 24 * 3600.0, "How long the ledger keeps turn records (the write-ahead log; tables keep them for good)."
    )
    snapshot_every_turns: int = _setting(20, "A session leaves a snapshot every this many turns (and when passivated).")
    lancedb_uri: str = _setting("", "LanceDB location of transcripts and snapshots; empty: <data_dir>/lancedb.")
    flush_rows: int = _setting(512, "The batch writer flushes to LanceDB when it holds this many records ...")
    flush_interval_s: float = _setting(1.0, "... or when its oldest record has waited this long.")
    store_check_interval_s: float = _setting(1.0, "How often the gateway checks the batch writer's health.")
    writer_ack_wait_s: float = _setting(
        60.0, "Redelivery timeout of ledger entries the batch writer took but did not ack."
    )
    session_idle_s: float = _setting(300.0, "Idle time after which a session is passivated.")
    max_sessions_per_host: int = _setting(10000, "Live sessions per host before the least recent are passivated.")
    window_max_messages: int = _setting(40, "Default number of recent messages kept verbatim in the prompt.")
    window_token_budget: int = _setting(8000, "Default token budget of the sliding window.")
    max_tokens: int = _setting(1024, "Default upper bound on output tokens per turn.")
    shutdown_grace_s: float = _setting(10.0, "On shutdown, how long running turns may take to finish.")
    model_provider: str = _setting("offline", "Model provider: offline or scripted.")
    offline_token_delay_s: float = _setting(0.02, "Pause between the offline responder's words.")
    scripted_tokens: int = _setting(16, "Tokens per answer of the scripted provider.")
    scripted_first_token_delay_s: float = _setting(0.0, "Scripted provider: delay before the first token.")
    scripted_token_delay_s: float = _setting(0.0, "Scripted provider: delay between tokens.")
    log_level: str = _setting("INFO", "Log level of the engine's logs.")

    def __post_init__(self) -> None:
        problems = []
        if self.num_hosts < 1:
            problems.append("num_hosts must be at least 1")
        if self.num_shards < self.num_hosts:
            problems.append("num_shards must be at least num_hosts")
        if not is_valid_id(self.default_tenant):
            problems.append("default_tenant must be 1-64 characters of [A-Za-z0-9_-]")
        if not is_valid_id(self.namespace) or "-" in self.namespace:
            problems.append("namespace must be letters, digits or '_'")
        if not 0 <= self.grpc_port <= 65535:
            problems.append("grpc_port must be 0-65535")
        if self.max_text_bytes < 1:
            problems.append("max_text_bytes must be positive")
        if self.event_retention_s <= self.dedupe_window_s:
            # A retry deduplicated by JetStream is answered from the turn's events: they must outlive it.
            problems.append("event_retention_s must be longer than dedupe_window_s")
        if problems:
            raise InvalidArgument("invalid configuration: " + "; ".join(problems), reason="INVALID_CONFIG")

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Build the config from the TOML file at ``path`` (or ``$SALON_CONFIG``) and the environment."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get("SALON_CONFIG")
        if path:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise InvalidArgument(f"unknown settings in {path}: {', '.join(unknown)}", reason="INVALID_CONFIG")
            values.update(data)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for name in (env_name(f), f.metadata.get("env")):
                if name and name in env:
                    values[f.name] = _parse(env[name], hints[f.name], name)
                    break
        return cls(**{k: _check(v, hints[k], k) for k, v in values.items()})

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def data_path(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def lancedb_location(self) -> str:
        """Where the LanceDB tables live."""
        return self.lancedb_uri or str(self.data_path / "lancedb")

    def provider_spec(self) -> ProviderSpec:
        """The model provider the hosts should build."""
        return ProviderSpec(
            kind=self.model_provider,
            scripted_tokens=self.scripted_tokens,
            scripted_first_token_delay_s=self.scripted_first_token_delay_s,
            scripted_token_delay_s=self.scripted_token_delay_s,
            offline_token_delay_s=self.offline_token_delay_s,
        )


def env_name(f: dataclasses.Field[Any]) -> str:
    """The ``SALON_*`` variable of a config field."""
    return "SALON_" + f.name.upper()


def _parse(raw: str, typ: Any, name: str) -> Any:
    """A setting from an environment variable (always a string)."""
    try:
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be a {typ.__name__}", reason="INVALID_CONFIG") from None
    return raw


def _check(value: Any, typ: Any, name: str) -> Any:
    """A setting from the TOML file (already typed) or from the environment (already parsed)."""
    ok = (
        (typ is int and isinstance(value, int) and not isinstance(value, bool))
        or (typ is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (typ is str and isinstance(value, str))
    )
    if not ok:
        raise InvalidArgument(f"{name} must be a {typ.__name__}", reason="INVALID_CONFIG")
    return float(value) if typ is float else value


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) of every setting, for docs and ``salon config``."""
    rows = []
    for f in dataclasses.fields(Config):
        names = env_name(f) + (f" or {f.metadata['env']}" if f.metadata.get("env") else "")
        rows.append((names, repr(f.default) if f.default != "" else '""', f.metadata["help"]))
    return rows


def markdown_table() -> str:
    """Every setting as the Markdown table in the README."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | `{default}` | {meaning} |" for name, default, meaning in describe()]
    return "\n".join(lines) + "\n"
