"""Shard placement: which shard a session belongs to and which host owns a shard.

The hash must be stable across processes and Python versions (``hash()`` is salted per process), so it is
derived from BLAKE2b.
"""

from __future__ import annotations

import hashlib


def shard_for(tenant_id: str, session_id: str, num_shards: int) -> int:
    """The shard of a session: stable, uniform over ``range(num_shards)``."""
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    digest = hashlib.blake2b(f"{tenant_id}/{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def shards_of_host(host_index: int, num_hosts: int, num_shards: int) -> list[int]:
    """The shards host ``host_index`` owns: every shard is owned by exactly one host."""
    if not 0 <= host_index < num_hosts:
        raise ValueError("host_index out of range")
    if num_shards < num_hosts:
        raise ValueError("need at least as many shards as hosts")
    return [s for s in range(num_shards) if s % num_hosts == host_index]


def host_of_shard(shard: int, num_hosts: int) -> int:
    """The host that owns ``shard``."""
    return shard % num_hosts
