"""The gRPC server's transport limits, sized so that Salon, not the transport, refuses oversized requests.

gRPC refuses a message over ``grpc.max_receive_message_length`` (4 MiB by default) and call metadata over
``grpc.max_metadata_size`` (16 KiB hard by default) with its own ``RESOURCE_EXHAUSTED`` and no
``salon-error-reason``. The transport limits here sit far above Salon's own (the configured text and document
limits, the system prompt limit, and :data:`MAX_CALL_METADATA_BYTES`, which :mod:`salon.engine.gates` enforces),
so a request over Salon's limit is read and answered with ``INVALID_ARGUMENT`` and a reason
(``TEXT_TOO_LARGE``, ``BAD_METADATA``, ``CALL_METADATA_TOO_LARGE`` …); only an absurd one, over the
transport limit, still gets gRPC's answer. The cost of the headroom is that a request up to the transport
limit is read into memory before it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from salon.engine.config import Config
from salon.engine.validation import MAX_SYSTEM_PROMPT_BYTES

MiB: Final = 1024 * 1024

MAX_CALL_METADATA_BYTES: Final = 16 * 1024
"""The call metadata Salon accepts (keys and values, plus HTTP/2's 32 bytes per entry): gRPC's default hard
limit, far above what a client sends (credentials and trace context)."""

HEADROOM: Final = 4
"""Transport limits are at least this many times Salon's own."""

MIN_TRANSPORT_BYTES: Final = 16 * MiB
"""The transport limits' floor: a request of a few megabytes (ten for metadata) still gets Salon's answer."""

_ENTRY_OVERHEAD: Final = 32  # RFC 7541 section 4.1: each header field counts its name, value and 32 bytes


def largest_request_bytes(config: Config) -> int:
    """The largest payload Salon accepts in one request under ``config``."""
    return max(
        config.max_text_bytes, config.max_document_bytes, config.tenant_max_message_bytes, MAX_SYSTEM_PROMPT_BYTES
    )


def transport_limits(config: Config) -> tuple[int, int]:
    """(largest message, largest call metadata) the transport reads, in bytes."""
    message = max(MIN_TRANSPORT_BYTES, HEADROOM * largest_request_bytes(config) + MiB)
    metadata = max(MIN_TRANSPORT_BYTES, HEADROOM * MAX_CALL_METADATA_BYTES)
    return message, metadata


def server_options(config: Config) -> list[tuple[str, int]]:
    """Channel arguments of the engine's gRPC server."""
    message, metadata = transport_limits(config)
    return [
        ("grpc.max_receive_message_length", message),
        # Soft and hard limit alike: between the two, gRPC refuses a share of calls at random.
        ("grpc.max_metadata_size", metadata),
        ("grpc.absolute_max_metadata_size", metadata),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def metadata_bytes(metadata: Iterable[tuple[str, str | bytes]]) -> int:
    """The size of call metadata as HTTP/2 counts it."""
    return sum(len(key) + len(value) + _ENTRY_OVERHEAD for key, value in metadata)
