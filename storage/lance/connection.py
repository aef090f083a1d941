"""Opening LanceDB where the deployment keeps it, a local directory or an object store, and retrying the commits
that lose to another writer.

An object-store location is a URI (``s3://bucket/prefix``, also ``gs://`` and ``az://``) with storage options
(endpoint, region, credentials, ``allow_http``) handed to LanceDB as they are. Every process of a deployment
(gateways, hosts, the batch writer) opens the same location with the same options.

Several writers commit to one table at once: the batch writer's transcripts, the memory indexer, ingestion on any
gateway, a session deletion. Lance commits optimistically (a manifest written with a conditional put, which S3
and its compatibles support): a commit that loses to another one is rebased when the two do not touch the same
rows (appends, inserts of new keys), and otherwise fails as a commit conflict. ``merge_insert`` already retries
such a conflict itself for up to 30 s; :func:`retry_conflicts` retries the other writes (deletes, index builds,
compaction) and a merge that gave up, with a jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Final, TypeVar

import lancedb
from lancedb.db import AsyncConnection

log = logging.getLogger(__name__)

OBJECT_STORE_SCHEMES: Final = ("s3://", "s3+ddb://", "gs://", "az://", "abfs://", "memory://")
CONFLICT_ATTEMPTS: Final = 8
CONFLICT_BACKOFF_S: Final = (0.05, 2.0)
"""First and longest wait between two attempts of a commit that lost to another writer."""

_T = TypeVar("_T")


def is_object_store(uri: str) -> bool:
    """Whether ``uri`` names an object store rather than a local directory."""
    return uri.lower().startswith(OBJECT_STORE_SCHEMES)


async def connect(
    uri: str, *, storage_options: Mapping[str, str] | None = None, read_consistency_s: float | None = 0.0
) -> AsyncConnection:
    """Connect to the LanceDB at ``uri`` with ``storage_options`` (ignored for a local directory).

    ``read_consistency_s``: how stale a read may be with respect to commits made through another connection;
    ``0`` looks for a newer version on every read, ``None`` never does."""
    interval = None if read_consistency_s is None else timedelta(seconds=read_consistency_s)
    options = dict(storage_options or {}) if is_object_store(uri) else {}
    return await lancedb.connect_async(uri, read_consistency_interval=interval, storage_options=options or None)


def is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is LanceDB's report of a commit that lost to a concurrent one (safe to run again)."""
    # The binding reports Lance's CommitConflict / RetryableCommitConflict / IncompatibleTransaction as
    # RuntimeError with the kind in the message; there is no exception class to catch.
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return "commit conflict" in text or "incompatible transaction" in text or "conflicting transaction" in text


async def retry_conflicts(
    operation: Callable[[], Awaitable[_T]], *, what: str, attempts: int = CONFLICT_ATTEMPTS
) -> _T:
    """Run ``operation``, again after a jittered backoff each time it fails with a commit conflict (up to
    ``attempts`` runs); any other failure, or the last conflict, propagates. ``operation`` must be safe to run
    again: each write of the store is (inserts are insert-if-absent, deletes and index builds idempotent)."""
    delay = CONFLICT_BACKOFF_S[0]
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except RuntimeError as exc:
            if attempt == attempts or not is_commit_conflict(exc):
                raise
            log.info("%s lost a commit race (attempt %d); retrying", what, attempt)
        await asyncio.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, CONFLICT_BACKOFF_S[1])
    raise AssertionError("unreachable")
