"""Shard placement: stable, in range, uniform, and a partition of the shards across hosts."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from salon.actors.placement import host_of_shard, shard_for, shards_of_host


def test_shard_for_matches_values_computed_once() -> None:
    # Pinned: a change here moves every session to another shard (and host) on upgrade.
    assert shard_for("default", "s1", 16) == 14
    assert shard_for("tenant-a", "abc", 16) == 14
    assert shard_for("t", "x", 7) == 1
    assert shard_for("default", "s1", 1024) == 910


def test_shard_for_is_blake2b_of_tenant_and_session() -> None:
    digest = hashlib.blake2b(b"acme/sess-42", digest_size=8).digest()
    assert shard_for("acme", "sess-42", 13) == int.from_bytes(digest, "big") % 13


def test_shard_for_is_stable_across_calls() -> None:
    first = [shard_for("acme", f"s{i}", 16) for i in range(200)]
    again = [shard_for("acme", f"s{i}", 16) for i in range(200)]
    assert first == again


def test_shard_for_depends_on_tenant() -> None:
    a = [shard_for("tenant-a", f"s{i}", 64) for i in range(100)]
    b = [shard_for("tenant-b", f"s{i}", 64) for i in range(100)]
    assert a != b


@pytest.mark.parametrize("num_shards", [1, 2, 16, 17, 1000])
def test_shard_for_is_in_range(num_shards: int) -> None:
    shards = {shard_for("acme", f"session-{i}", num_shards) for i in range(2000)}
    assert shards <= set(range(num_shards))
    if num_shards <= 17:
        assert shards == set(range(num_shards))


def test_shard_for_is_reasonably_uniform() -> None:
    counts = Counter(shard_for("acme", f"session-{i}", 16) for i in range(10_000))
    assert sorted(counts) == list(range(16))
    assert all(400 <= n <= 850 for n in counts.values()), counts


@pytest.mark.parametrize("num_shards", [0, -1])
def test_shard_for_rejects_bad_shard_count(num_shards: int) -> None:
    with pytest.raises(ValueError):
        shard_for("acme", "s", num_shards)


@pytest.mark.parametrize(("num_hosts", "num_shards"), [(1, 1), (1, 16), (2, 16), (3, 16), (5, 7), (16, 16)])
def test_shards_of_host_partitions_the_shards(num_hosts: int, num_shards: int) -> None:
    owned = [shards_of_host(h, num_hosts, num_shards) for h in range(num_hosts)]
    flat = [s for shards in owned for s in shards]
    assert sorted(flat) == list(range(num_shards))  # every shard exactly once
    assert all(shards for shards in owned)  # no host idle
    for h, shards in enumerate(owned):
        assert all(host_of_shard(s, num_hosts) == h for s in shards)


def test_shards_of_host_example() -> None:
    assert shards_of_host(0, 3, 8) == [0, 3, 6]
    assert shards_of_host(2, 3, 8) == [2, 5]


@pytest.mark.parametrize(
    ("host_index", "num_hosts", "num_shards"),
    [(-1, 2, 16), (2, 2, 16), (0, 0, 16), (0, 4, 3)],
)
def test_shards_of_host_rejects_bad_arguments(host_index: int, num_hosts: int, num_shards: int) -> None:
    with pytest.raises(ValueError):
        shards_of_host(host_index, num_hosts, num_shards)
