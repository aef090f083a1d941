"""Identifiers: validation of caller-chosen ids and generation of server-side ones."""

from __future__ import annotations

import os
import re
import time
import uuid

from salon.storage.errors import InvalidArgument
from salon.storage.reasons import id_reason

# Ids become NATS subject tokens and storage keys, so they must avoid '.', '*', '>' and whitespace.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is usable as a session, turn, tenant or idempotency id."""
    return _ID_RE.fullmatch(value) is not None


def require_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidArgument` naming ``what`` only (its
    reason: ``INVALID_`` and the field's name, for example ``INVALID_SESSION_ID``)."""
    if not is_valid_id(value):
        raise InvalidArgument(
            f"{what} must be 1 to 64 characters of letters, digits, '_' or '-'", reason=id_reason(what)
        )
    return value


def uuid7() -> str:
    """A new RFC 9562 UUIDv7: time-ordered (ms precision) with 74 random bits, so ids sort by creation."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return str(uuid.UUID(int=value))
