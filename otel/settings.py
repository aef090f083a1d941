"""What telemetry a process runs with: a small picklable value handed to every process that makes spans."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MODES = ("off", "console", "jsonl", "otlp")


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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"telemetry must be one of {', '.join(MODES)}, not {self.mode!r}")

    @classmethod
    def from_config(cls, config: _ConfigLike) -> TelemetrySettings:
        """The settings an engine config asks for (span files default to ``<data_dir>/traces``)."""
        directory = config.telemetry_dir or str(Path(config.data_dir) / "traces")
        return cls(
            mode=config.telemetry,
            directory=directory,
            metrics_port=config.metrics_port,
            metrics_host=config.grpc_host,
            capture_content=config.capture_content,
        )
