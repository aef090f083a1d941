"""What telemetry a process runs with: a small picklable value handed to every process that makes spans."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MODES = ("off", "console", "jsonl", "otlp")
LOG_FORMATS = ("text", "json")


class _ConfigLike(Protocol):
    """The engine config fields telemetry reads (``engine.Config``; otel does not import the engine)."""

    @property
    def telemetry(self) -> str: ...
    @property
    def telemetry_dir(self) -> str: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def capture_content(self) -> bool: ...
    @property
    def data_dir(self) -> str: ...
    @property
    def grpc_host(self) -> str: ...
    @property
    def log_format(self) -> str: ...
    @property
    def log_dir(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Telemetry of one process. The default is off: nothing installed, every span a no-op."""

    mode: str = "off"
    """off, console (spans on stderr), jsonl (one file per process in ``directory``) or otlp (standard
    ``OTEL_EXPORTER_OTLP_*`` variables; needs opentelemetry-exporter-otlp)."""
    directory: str = ""
    """Where jsonl mode writes its span files."""
    metrics_port: int = -1
    """Prometheus scrape port of the gateway process: -1 off, 0 a free port."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on (the gateway's address)."""
    capture_content: bool = False
    """Put message content into spans (GenAI opt-in attributes). Off by default: content is user data."""
    service_name: str = "salon"
    log_format: str = "text"
    """How the process's logs look on stderr: text or json (one object per line, with the turn's ids)."""
    log_dir: str = ""
    """When set, every process also writes its logs as JSON lines to ``<log_dir>/<process>-<pid>.jsonl``."""
    otel_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # headers may hold credentials
    """The ``OTEL_*`` variables of the process that made these settings: a host process lacking one (Ray
    started it before the variable was set, or on another node) takes it from here; its own ones win."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"telemetry must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")

    @classmethod
    def from_config(cls, config: _ConfigLike, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The settings an engine config asks for (span files default to ``<data_dir>/traces``), with the
        standard variables of ``env`` (default: this process's) applied: see :func:`resolve_mode`."""
        env = os.environ if env is None else env
        directory = config.telemetry_dir or str(Path(config.data_dir) / "traces")
        return cls(
            mode=resolve_mode(config.telemetry, env),
            directory=directory,
            metrics_port=config.metrics_port,
            metrics_host=config.grpc_host,
            capture_content=config.capture_content,
            service_name=env.get("OTEL_SERVICE_NAME") or "salon",
            log_format=config.log_format,
            log_dir=config.log_dir,
            otel_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("OTEL_"))),
        )


def resolve_mode(mode: str, env: Mapping[str, str]) -> str:
    """The span export mode: ``OTEL_SDK_DISABLED=true`` turns it off; with Salon's own setting left off,
    ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``, the standard variable) turns it on."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "off"
    if mode == "off":
        wanted = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
        for name in ("otlp", "console"):
            if name in wanted:
                return name
    return mode
