"""The gRPC server's transport limits sit above Salon's own, so Salon answers oversized requests."""

from __future__ import annotations

from salon.engine.config import Config
from salon.engine.transport import (
    MAX_CALL_METADATA_BYTES,
    MIN_TRANSPORT_BYTES,
    metadata_bytes,
    server_options,
    transport_limits,
)


def test_the_defaults_leave_room_for_megabytes_of_request() -> None:
    message, metadata = transport_limits(Config())
    assert message == metadata == MIN_TRANSPORT_BYTES
    options = dict(server_options(Config()))
    assert options["grpc.max_receive_message_length"] == message
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == metadata


def test_the_message_limit_grows_with_the_configured_limits() -> None:
    big = Config(max_document_bytes=10 * 1024 * 1024)
    message, _ = transport_limits(big)
    assert message > 4 * big.max_document_bytes
    assert transport_limits(Config(max_text_bytes=8 * 1024 * 1024))[0] > 4 * 8 * 1024 * 1024


def test_metadata_is_counted_as_http2_does() -> None:
    assert metadata_bytes([("authorization", "Bearer k"), ("x-b", b"\x00\x01")]) == 13 + 8 + 32 + 3 + 2 + 32
    assert metadata_bytes([("x", "v" * MAX_CALL_METADATA_BYTES)]) > MAX_CALL_METADATA_BYTES
