"""Free space where the engine writes: its data directory (the embedded NATS server's JetStream store and, by
default, LanceDB) and a local LanceDB directory elsewhere.

The engine stops taking new work while a filesystem it writes to is nearly full, rather than letting writes
fail half way: nats-server, once a JetStream write fails for lack of space, stops answering publishes to
that stream until it restarts. A reserve is kept so that turns already running can still be recorded, and
the engine serves again only once twice the reserve is free, so that it does not flap at the edge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

MIN_FREE_BYTES: Final = 64 * 1024 * 1024
"""Below this much free space on a filesystem the engine writes to, it refuses new work."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (or its nearest existing
    parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def local_directory(uri: str) -> Path | None:
    """The directory of a LanceDB location, or None for an object store (``s3://`` and the like)."""
    if "://" not in uri:
        return Path(uri).expanduser()
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://")).expanduser()
    return None


class DiskGuard:
    """Whether the filesystems under ``paths`` are too full to take new work; see the module documentation."""

    def __init__(
        self,
        paths: Iterable[Path],
        *,
        min_free_bytes: int = MIN_FREE_BYTES,
        free: Callable[[Path], int] = free_bytes,
    ) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._min_free = min_free_bytes
        self._free = free
        self.full = False

    def check(self) -> bool:
        """Look at the free space now; True when :attr:`full` changed."""
        try:
            least = min(self._free(p) for p in self._paths) if self._paths else self._min_free * 2
        except OSError as exc:
            log.warning("cannot read the free space of the data directory (%s)", type(exc).__name__)
            return False
        full = least < self._min_free if not self.full else least < 2 * self._min_free
        if full == self.full:
            return False
        self.full = full
        if full:
            log.error("the data directory's disk is nearly full (%d MiB free); refusing new turns", least >> 20)
        else:
            log.warning("the data directory's disk has room again (%d MiB free)", least >> 20)
        return True
