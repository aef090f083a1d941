"""Elastic shard ownership: each host holds a lease per shard it owns and a presence lease, and takes or gives up
shards so that every live host owns about its fair share.

Every host runs the same round (:meth:`ShardLeases.tick`) every third of the lease time:

1. renew its presence and every shard lease it holds; a lease that expired (a late round) and is still free is
   taken again; one found taken by another host is given up at once: no more turns are pulled for it, the
   running ones may finish, and the ledger fences this host's next write to any session the other host has
   activated;
2. read every lease, count the live hosts, and work out its fair share (``num_shards`` split over the hosts in
   name order, the first ones taking one more when it does not divide);
3. above its share, give shards up gracefully (stop pulling, let their running turns finish, leave a snapshot,
   release the lease) while still renewing their leases; below it, take free shards, those of its start-up slot
   first, so a deployment started with every host at once gets the same layout as the fixed assignment did.

A host that joins counts itself at once and the others see it on their next round, give up what is above
their new share, and it takes what they free. A host that leaves (:meth:`ShardLeases.leave`) gives its shards
up the same way; a host that dies stops renewing and its leases expire after the lease time. Plain asyncio, the
store injected (``storage.jetstream.leases`` in a deployment, ``storage.inmemory`` in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from salon.otel import stop_tasks
from salon.storage.errors import Unavailable
from salon.storage.leases import Lease, LeaseStore

log = logging.getLogger(__name__)

SHARD_PREFIX = "shard."
HOST_PREFIX = "host."
HUNGRY_INTERVAL_S = 0.2
"""How often a host below its share looks for freed shards."""


def shard_key(shard: int) -> str:
    """The lease key of ``shard``."""
    return f"{SHARD_PREFIX}{shard}"


def host_key(holder: str) -> str:
    """The presence key of ``holder``."""
    return f"{HOST_PREFIX}{holder}"


def fair_shares(hosts: Iterable[str], num_shards: int) -> dict[str, int]:
    """How many shards each host should own: ``num_shards`` split evenly, the first hosts in name order taking
    one more when it does not divide (every host computes the same split from the same set of hosts)."""
    ordered = sorted(set(hosts))
    if not ordered:
        return {}
    base, extra = divmod(num_shards, len(ordered))
    return {host: base + (1 if i < extra else 0) for i, host in enumerate(ordered)}


@dataclass(frozen=True, slots=True)
class Moves:
    """What one host should do now: shards to take (free ones) and shards to give up."""

    take: tuple[int, ...] = ()
    give_up: tuple[int, ...] = ()


def plan_moves(
    me: str,
    hosts: Collection[str],
    owners: Mapping[int, str],
    num_shards: int,
    preferred: Collection[int] = (),
) -> Moves:
    """The moves that bring ``me`` to its fair share among ``hosts`` (``me`` counted whether listed or not),
    given who owns which shard now (``owners``: live leases only). Shards of ``preferred`` are taken first and
    given up last."""
    target = fair_shares({*hosts, me}, num_shards)[me]
    mine = sorted(s for s, holder in owners.items() if holder == me)
    if len(mine) > target:
        # Keep the preferred shards; give up the others, highest first.
        order = sorted(mine, key=lambda s: (s in preferred, -s))
        return Moves(give_up=tuple(order[: len(mine) - target]))
    free = [s for s in range(num_shards) if s not in owners]
    free.sort(key=lambda s: (s not in preferred, s))
    return Moves(take=tuple(free[: target - len(mine)]))


ShardTaken = Callable[[int], Awaitable[None]]
"""Called once a shard's lease is held: start pulling its turns."""
ShardGivenUp = Callable[[int, float], Awaitable[None]]
"""Called to stop serving a shard, letting its running turns finish within the grace (seconds)."""


class ShardLeases:
    """One host's shard leases. Lifecycle: :meth:`start`, then :meth:`leave` (gives every shard up for others to
    take at once) or :meth:`close` (stops renewing: the leases expire). Both idempotent."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        holder: str,
        num_shards: int,
        on_take: ShardTaken,
        on_give_up: ShardGivenUp,
        preferred: Collection[int] = (),
        expected_hosts: int = 1,
        move_grace_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.holder = holder
        self._num_shards = num_shards
        self._on_take = on_take
        self._on_give_up = on_give_up
        self._preferred = frozenset(preferred)
        self._expected_hosts = expected_hosts
        self._move_grace_s = move_grace_s
        self._clock = clock
        self._interval_s = store.ttl_s / 3
        self._join_wait_s = store.ttl_s
        """How long a host waits for ``expected_hosts`` to appear before taking shards (so hosts started
        together split the shards at once instead of the first taking them all)."""
        self._presence: Lease | None = None
        self._leases: dict[int, Lease] = {}
        self._renewed_at: dict[int, float] = {}
        """When each lease's last successful write was sent: past the lease time from there it may be another's."""
        self._giving_up: dict[int, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        """Renewals and releases of one lease must not interleave (a release naming a revision a renewal just
        replaced would leave the lease held)."""
        self._started_at: float | None = None
        self._joined = False
        self._adopted = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.rounds = 0
        self.taken = 0
        self.given_up = 0
        self.lost = 0

    @property
    def owned(self) -> frozenset[int]:
        """The shards this host serves now (held, and not being given up)."""
        return frozenset(s for s in self._leases if s not in self._giving_up)

    @property
    def joined(self) -> bool:
        """Whether the host has begun taking shards."""
        return self._joined

    def stats(self) -> dict[str, int]:
        """Ownership figures."""
        return {
            "shards_owned": len(self.owned),
            "shards_taken": self.taken,
            "shards_given_up": self.given_up,
            "shard_leases_lost": self.lost,
        }

    async def settled(self) -> None:
        """Wait until every give-up under way has finished."""
        while self._giving_up:
            await asyncio.wait(set(self._giving_up.values()))

    async def start(self) -> None:
        """Announce this host and start the rounds (the first one at once). Idempotent."""
        if self._task is not None or self._closed:
            return
        self._started_at = self._clock()
        self._task = asyncio.create_task(self._loop(), name=f"{self.holder}-leases")

    def wake(self) -> None:
        """Run the next round now (for example when another host has released a shard)."""
        self._wake.set()

    async def _loop(self) -> None:
        # Not ``while True``: a cancellation can be swallowed (see otel.stop_tasks), and leave() and close() await
        # this task after setting ``_closed``.
        while not self._closed:
            hungry = False
            limit = asyncio.timeout(self._store.ttl_s)
            try:
                # Bounded: a round stuck on the store must not keep this host serving shards whose leases lapse
                # meanwhile; the next round renews or gives up what this one left.
                async with limit:
                    hungry = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError) and limit.expired():
                    log.warning("%s: a shard lease round took the whole lease time; starting another", self.holder)
                else:
                    log.exception("a shard lease round failed; trying again")
            # Below its share (or still joining) a host looks again soon: the shards it waits for are freed by
            # other hosts' rounds, and every moment it waits they are unserved.
            interval = min(HUNGRY_INTERVAL_S, self._interval_s) if hungry else self._interval_s
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def tick(self) -> bool:
        """One round: renew, read, take or give up (see the module docstring). Returns whether this host is
        still below its share (or waiting for the hosts started with it)."""
        if self._closed:
            return False
        if self._started_at is None:
            self._started_at = self._clock()
        self.rounds += 1
        await self._renew_all()
        try:
            leases = await self._store.held()
        except Unavailable:
            log.warning("cannot read the shard leases; keeping the shards held")
            return False
        if not self._adopted:
            self._adopted = True
            await self._adopt(leases)
        hosts = {lease.holder for key, lease in leases.items() if key.startswith(HOST_PREFIX)}
        hosts.add(self.holder)
        owners = {
            int(key[len(SHARD_PREFIX) :]): lease.holder for key, lease in leases.items() if key.startswith(SHARD_PREFIX)
        }
        # Our own view wins over a read that raced one of our writes.
        owners.update({shard: self.holder for shard in self._leases})
        if not self._joined:
            waited = self._clock() - self._started_at
            if len(hosts) < self._expected_hosts and waited < self._join_wait_s:
                return True
            self._joined = True
        moves = plan_moves(self.holder, hosts, owners, self._num_shards, self._preferred)
        for shard in moves.give_up:
            if shard not in self._giving_up:
                self._giving_up[shard] = asyncio.create_task(
                    self._give_up(shard, self._move_grace_s), name=f"{self.holder}-give-up-{shard}"
                )
        # A shard still stopping here (its lease was lost mid-move) is taken once that has finished.
        for shard in [s for s in moves.take if s not in self._giving_up]:
            await self._take(shard)
        target = fair_shares(hosts, self._num_shards)[self.holder]
        return len(self._leases) < target

    async def _adopt(self, leases: Mapping[str, Lease]) -> None:
        """Take over the leases an earlier process of this host still holds (it died and was restarted), so its
        shards are served again at once instead of after the lease time. Done once, at start: later, a lease of
        ours we did not know of would be a second live process's, and the two must not trade it back and forth."""
        for key, lease in leases.items():
            if lease.holder != self.holder:
                continue
            if key == host_key(self.holder):
                self._presence = self._presence or lease
            elif key.startswith(SHARD_PREFIX):
                shard = int(key[len(SHARD_PREFIX) :])
                if shard in self._leases:
                    continue
                async with self._lock:
                    sent = self._clock()
                    try:
                        renewed = await self._store.renew(lease)
                    except Unavailable:
                        continue
                    if renewed is None:
                        continue
                    self._leases[shard] = renewed
                    self._renewed_at[shard] = sent
                await self._start_serving(shard)

    async def _renew_all(self) -> None:
        async with self._lock:
            self._presence = await self._renew_presence()
            for shard, lease in list(self._leases.items()):
                sent = self._clock()
                try:
                    renewed = await self._store.renew(lease)
                except Unavailable:
                    if self._clock() - self._renewed_at[shard] < self._store.ttl_s * 0.9:
                        continue
                    renewed = None  # past the lease time without a renewal: someone may hold it now
                if renewed is None:
                    # Refused: expired (a round came late: an overloaded host) or taken. When nobody holds it, it
                    # is taken again at once and nothing is interrupted; a session another host activated
                    # meanwhile is fenced by the ledger at this host's next write to it.
                    with contextlib.suppress(Unavailable):
                        renewed = await self._store.create(shard_key(shard), self.holder)
                if renewed is None:
                    self._lose(shard)
                    continue
                self._leases[shard] = renewed
                self._renewed_at[shard] = sent

    async def _renew_presence(self) -> Lease | None:
        try:
            if self._presence is not None:
                renewed = await self._store.renew(self._presence)
                if renewed is not None:
                    return renewed
            return await self._store.create(host_key(self.holder), self.holder)
        except Unavailable:
            return self._presence

    def _lose(self, shard: int) -> None:
        """The lease of ``shard`` is gone: stop serving it at once."""
        log.warning("%s lost its lease on shard %d", self.holder, shard)
        self.lost += 1
        del self._leases[shard]
        self._renewed_at.pop(shard, None)
        if shard in self._giving_up:
            # Already stopping: it stopped pulling the shard at once and lets it finish (its release of the
            # lost lease does nothing). Cancelling it midway would leave the shard's subscription and sessions.
            return
        self._giving_up[shard] = asyncio.create_task(self._stop_serving(shard), name=f"{self.holder}-lost-{shard}")

    async def _stop_serving(self, shard: int) -> None:
        try:
            # Its turns still get the grace: one whose session moved is fenced at its next write, the others
            # finish rather than being cut off.
            await self._on_give_up(shard, self._move_grace_s)
        except Exception:
            log.exception("stopping shard %d failed", shard)
        finally:
            if self._giving_up.get(shard) is asyncio.current_task():
                del self._giving_up[shard]

    async def _take(self, shard: int) -> None:
        try:
            lease = await self._store.create(shard_key(shard), self.holder)
        except Unavailable:
            return
        if lease is None:
            return  # taken by another host since the read
        async with self._lock:
            self._leases[shard] = lease
            self._renewed_at[shard] = self._clock()
        await self._start_serving(shard)

    async def _start_serving(self, shard: int) -> None:
        """Serve ``shard``, whose lease is now held; when that fails, or the round is cut short meanwhile, release
        the lease (nothing serves the shard, and the next round takes it again, here or elsewhere)."""
        try:
            await self._on_take(shard)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(shard))
            raise
        except Exception:
            log.exception("starting shard %d failed; releasing it", shard)
            await self._release(shard)
            return
        self.taken += 1

    async def _give_up(self, shard: int, grace_s: float) -> None:
        """Stop serving ``shard`` gracefully, then release its lease (renewed meanwhile by the rounds)."""
        try:
            try:
                await self._on_give_up(shard, grace_s)
            except Exception:
                log.exception("giving up shard %d failed; releasing it anyway", shard)
            await self._release(shard)
            self.given_up += 1
            log.info("%s gave up shard %d", self.holder, shard)
        finally:
            if self._giving_up.get(shard) is asyncio.current_task():
                del self._giving_up[shard]

    async def _release(self, shard: int) -> None:
        async with self._lock:
            lease = self._leases.pop(shard, None)
            self._renewed_at.pop(shard, None)
            if lease is not None:
                with contextlib.suppress(Unavailable):
                    await self._store.release(lease)

    async def _stop_rounds(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    async def leave(self, grace_s: float | None = None) -> None:
        """Give every shard up (their running turns get ``grace_s``, by default the move grace) and withdraw this
        host, so the others take its shards at their next round. Idempotent."""
        await self._stop_rounds()
        grace = self._move_grace_s if grace_s is None else grace_s
        for shard in list(self._leases):
            if shard not in self._giving_up:
                self._giving_up[shard] = asyncio.create_task(self._give_up(shard, grace))
        # Renew what is still held while turns finish, so no lease lapses halfway through a graceful move.
        while self._giving_up:
            pending = set(self._giving_up.values())
            await asyncio.wait(pending, timeout=self._interval_s)
            if self._giving_up:
                await self._renew_all()
        presence, self._presence = self._presence, None
        if presence is not None:
            with contextlib.suppress(Unavailable):
                await self._store.release(presence)

    async def close(self) -> None:
        """Stop renewing without giving anything up: the leases expire after the lease time. Idempotent."""
        await self._stop_rounds()
        tasks = list(self._giving_up.values())
        self._giving_up.clear()
        await stop_tasks(tasks)
