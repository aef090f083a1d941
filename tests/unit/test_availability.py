"""What the engine takes on while NATS is away or its disk is full (engine.gates.Availability) and how it
tells a full disk (engine.disk)."""

from __future__ import annotations

from pathlib import Path

from salon.engine.disk import MIN_FREE_BYTES, DiskGuard, free_bytes, local_directory
from salon.engine.gates import Availability

NATS = ("/salon.v1.ConversationService/",)
WRITING = frozenset({"/salon.v1.ConversationService/SendTurn", "/salon.v1.KnowledgeService/IngestDocuments"})


def test_refusals_name_the_cause_a_full_disk_first() -> None:
    availability = Availability(NATS, WRITING)
    assert availability.serving
    assert availability.refusal("/salon.v1.ConversationService/SendTurn") is None

    availability.bus_ready = False
    error = availability.refusal("/salon.v1.ConversationService/GetHistory")
    assert error is not None and error.reason == "NATS_UNAVAILABLE" and error.retry_after_s
    assert availability.refusal("/salon.v1.KnowledgeService/Search") is None
    assert not availability.serving

    availability.disk_full = True
    for method in WRITING:
        error = availability.refusal(method)
        assert error is not None and error.reason == "STORAGE_FULL" and error.retry_after_s
    error = availability.refusal("/salon.v1.ConversationService/GetHistory")
    assert error is not None and error.reason == "NATS_UNAVAILABLE"

    availability.bus_ready = True
    assert availability.refusal("/salon.v1.ConversationService/DeleteSession") is None, "deleting frees space"
    assert availability.refusal("/salon.v1.KnowledgeService/IngestDocuments") is not None
    availability.disk_full = False
    availability.store_healthy = False
    assert not availability.serving


def test_the_disk_is_full_below_the_reserve_and_has_room_again_at_twice_it() -> None:
    free = {"now": 10 * MIN_FREE_BYTES}
    guard = DiskGuard([Path("/data")], free=lambda _: free["now"])
    assert not guard.check() and not guard.full
    free["now"] = MIN_FREE_BYTES - 1
    assert guard.check() and guard.full
    free["now"] = MIN_FREE_BYTES + 1
    assert not guard.check() and guard.full, "no flapping at the edge"
    free["now"] = 2 * MIN_FREE_BYTES
    assert guard.check() and not guard.full


def test_the_fullest_filesystem_decides_and_an_unreadable_one_changes_nothing() -> None:
    sizes = {Path("/data"): 10 * MIN_FREE_BYTES, Path("/lance"): 0}
    assert DiskGuard(sizes, free=sizes.__getitem__).check()

    def broken(_: Path) -> int:
        raise OSError("gone")

    guard = DiskGuard([Path("/data")], free=broken)
    assert not guard.check() and not guard.full


def test_free_bytes_looks_at_the_nearest_existing_directory(tmp_path: Path) -> None:
    assert free_bytes(tmp_path / "not" / "made" / "yet") > 0


def test_only_local_lancedb_locations_are_watched() -> None:
    assert local_directory("/var/salon/lancedb") == Path("/var/salon/lancedb")
    assert local_directory("file:///var/salon/lancedb") == Path("/var/salon/lancedb")
    assert local_directory("s3://bucket/salon") is None
