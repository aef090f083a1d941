"""The Ray actor that hosts a :class:`~actors.host.SessionHost`: the only Ray code in Salon.

A thin shell: it connects to NATS, builds the host from a :class:`HostSpec` and forwards lifecycle calls.
Ray restarts it when its process dies; ``__init__`` runs again and the host takes up its shards, where
JetStream redelivers whatever the dead process had not acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.host import HostSettings, SessionHost
from actors.model import ModelProvider
from storage import EventPublisher, KvSessionRegistry, KvSnapshotStore, Names, ShardPuller, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostSpec:
    """Everything a host process needs to build its host (pickled by Ray)."""

    index: int
    shards: tuple[int, ...]
    nats_url: str
    namespace: str
    provider_factory: Callable[[], ModelProvider]
    settings: HostSettings = field(default_factory=HostSettings)
    log_level: str = "WARNING"


async def build_host(spec: HostSpec) -> tuple[SessionHost, Any]:
    """Connect to NATS and build the host described by ``spec`` (returns the host and its connection)."""
    names = Names(spec.namespace)
    nc = await connect(spec.nats_url, name=f"salon-host-{spec.index}")
    js = nc.jetstream()
    host = SessionHost(
        name=f"host-{spec.index}",
        pullers=[ShardPuller(nc, names, shard) for shard in spec.shards],
        events=EventPublisher(nc, names),
        registry=await KvSessionRegistry.open(js, names),
        snapshots=await KvSnapshotStore.open(js, names),
        provider=spec.provider_factory(),
        settings=spec.settings,
    )
    return host, nc


@ray.remote(max_restarts=-1, num_cpus=0)
class HostActor:
    """Ray shell around one :class:`SessionHost`."""

    def __init__(self, spec: HostSpec) -> None:
        logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._spec = spec
        self._host: SessionHost | None = None
        self._nc: Any = None
        # Async actors run __init__ inside the actor's event loop: start here so a restarted actor resumes
        # its shards without anyone calling it.
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        self._host, self._nc = await build_host(self._spec)
        await self._host.start()

    async def ready(self) -> dict[str, Any]:
        """Wait until the host pulls its shards; returns its pid and shards."""
        await self._started
        return {"pid": os.getpid(), "index": self._spec.index, "shards": list(self._spec.shards)}

    async def stats(self) -> dict[str, int]:
        """The host's live figures."""
        await self._started
        assert self._host is not None
        return self._host.stats()

    async def drain(self, grace_s: float) -> None:
        """Stop taking turns; let running ones finish within ``grace_s``."""
        await self._started
        assert self._host is not None
        await self._host.drain(grace_s)

    async def close(self) -> None:
        """Close the host and its NATS connection. Idempotent."""
        await self._started
        if self._host is not None:
            await self._host.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.drain()
