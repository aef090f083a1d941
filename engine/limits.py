"""Per-tenant limits and budgets, counted at the gateway: turns per minute, concurrent turns, tokens per
day (from the usage events of the turns it relays), message size and number of sessions.

Exceeding one ends the call with ``RESOURCE_EXHAUSTED``, the limit's name as reason (``TURNS_PER_MINUTE``,
``CONCURRENT_TURNS``, ``TOKENS_PER_DAY``, ``MESSAGE_TOO_LARGE``, ``MAX_SESSIONS``) and, where waiting helps, a
retry hint. Every gateway of a deployment shares the counts (:mod:`salon.storage.usage`), so the limits hold
behind a load balancer:

* turns per minute and concurrent turns, for a tenant that has either limit, are checked and counted in one
  compare-and-set per new turn; the running turns a gateway holds are leased (renewed while they run), so a
  gateway that dies stops holding them after :data:`~salon.storage.usage.LEASE_S`. A tenant without these
  limits costs its turns nothing there (its figures are this gateway's own);
* tokens are summed in memory and recorded every :data:`~salon.engine.token_meter.FLUSH_INTERVAL_S`
  (:class:`~salon.engine.token_meter.TokenMeter`), never on a turn's path: the budget check sees another
  gateway's tokens within about two intervals.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from salon.actors.usage import total_tokens
from salon.engine.tenants import Limits, TenantPolicy
from salon.engine.token_meter import FLUSH_INTERVAL_S, TokenMeter
from salon.otel import stop_tasks
from salon.storage.errors import ResourceExhausted, SalonError
from salon.storage.ids import uuid7
from salon.storage.inmemory import InMemoryTokenCounters, InMemoryTurnCounters
from salon.storage.reasons import Reason
from salon.storage.usage import LEASE_S, WINDOW_S, TokenCounters, TurnCounters, TurnLimits
from salon.v1 import turn_pb2

log = logging.getLogger(__name__)

DAY_S = 86400.0
_COUNTED_TURNS = 10_000
"""Turn ids whose usage was counted, remembered so a replayed turn (a retry) is not counted twice."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's figures now, with the limits that apply (0: none)."""

    tenant_id: str
    turns_last_minute: int
    concurrent_turns: int
    tokens_today: int
    sessions: int
    limits: Limits


class _Counters:
    """This gateway's own turns of one tenant: started in the last minute (wall clock) and running."""

    __slots__ = ("active", "lock", "shared", "turns")

    def __init__(self) -> None:
        self.turns: collections.deque[float] = collections.deque()
        self.active = 0
        self.shared = 0
        """Of the running turns, those counted in the shared store (their tenant had a turn limit)."""
        self.lock = asyncio.Lock()
        """Serialises this gateway's writes of the tenant's shared counts (each states ``shared``)."""


class TurnSlot:
    """A running turn's place in its tenant's concurrency limit; :meth:`release` once (idempotent)."""

    def __init__(self, release: Callable[[], Awaitable[None] | None]) -> None:
        self._release: Callable[[], Awaitable[None] | None] | None = release

    def release(self) -> Awaitable[None] | None:
        """Give the place back; what to await until every gateway sees it given back (None: nothing)."""
        release, self._release = self._release, None
        return release() if release is not None else None


def _turn_limits(limits: Limits) -> TurnLimits | None:
    if not (limits.turns_per_minute or limits.concurrent_turns):
        return None
    return TurnLimits(turns_per_minute=limits.turns_per_minute, concurrent_turns=limits.concurrent_turns)


class TenantLimiter:
    """Applies each tenant's :class:`Limits`. ``wall`` (epoch seconds: the minute window, the leases and the
    UTC day of the token budget) is injectable so tests move time instead of waiting for it.

    Lifecycle: :meth:`start` runs the token recorder and the lease renewal; :meth:`close` (idempotent) stops
    them after recording the last tokens and giving back this gateway's running turns."""

    def __init__(
        self,
        policy_for: Callable[[str], TenantPolicy],
        *,
        count_sessions: Callable[[str], Awaitable[int]] | None = None,
        tokens: TokenCounters | None = None,
        turns: TurnCounters | None = None,
        wall: Callable[[], float] = time.time,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self._policy_for = policy_for
        self._count_sessions = count_sessions
        self.meter = TokenMeter(tokens if tokens is not None else InMemoryTokenCounters(), interval_s=flush_interval_s)
        self._turns = turns if turns is not None else InMemoryTurnCounters(lease_s)
        self.holder = uuid7()
        """This gateway run's name in the shared turn counts."""
        self._renew_s = lease_s / 3
        self.wall = wall
        self._tenants: dict[str, _Counters] = collections.defaultdict(_Counters)
        self._counted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._releases: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    def _counters(self, tenant_id: str) -> _Counters:
        counters = self._tenants[tenant_id]
        now = self.wall()
        while counters.turns and counters.turns[0] <= now - WINDOW_S:
            counters.turns.popleft()
        return counters

    def _day(self) -> int:
        return int(self.wall() // DAY_S)

    async def admit_turn(self, tenant_id: str, text: str) -> TurnSlot:
        """Count a new turn against the tenant's limits, or raise :class:`ResourceExhausted`."""
        limits = self._policy_for(tenant_id).limits
        if limits.max_message_bytes and len(text.encode("utf-8", "surrogatepass")) > limits.max_message_bytes:
            raise ResourceExhausted(
                f"the message is over this tenant's limit of {limits.max_message_bytes} bytes",
                reason=Reason.MESSAGE_TOO_LARGE,
            )
        if limits.tokens_per_day and await self.meter.total(tenant_id, self._day()) >= limits.tokens_per_day:
            until_midnight = DAY_S - self.wall() % DAY_S
            raise ResourceExhausted(
                "this tenant's tokens for today are used up (the budget resets at 00:00 UTC)",
                reason=Reason.TOKENS_PER_DAY,
                retry_after_s=until_midnight,
            )
        counters = self._counters(tenant_id)
        turn_limits = _turn_limits(limits)
        if turn_limits is not None:
            async with counters.lock:
                refusal = await self._turns.admit(tenant_id, self.holder, counters.shared, turn_limits, now=self.wall())
                if refusal is None:
                    counters.shared += 1
            if refusal is not None:
                if refusal.reason == Reason.TURNS_PER_MINUTE:
                    message = f"this tenant may start {limits.turns_per_minute} turns per minute"
                else:
                    message = f"this tenant may run {limits.concurrent_turns} turns at once"
                raise ResourceExhausted(message, reason=refusal.reason, retry_after_s=refusal.retry_after_s)
        counters.turns.append(self.wall())
        counters.active += 1
        shared = turn_limits is not None

        def release() -> Awaitable[None] | None:
            counters.active -= 1
            if not shared:
                return None
            counters.shared -= 1
            task = asyncio.create_task(self._hold(tenant_id, counters), name="salon-turn-release")
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
            return task

        return TurnSlot(release)

    async def _hold(self, tenant_id: str, counters: _Counters) -> None:
        """Tell every gateway how many of the tenant's turns this one runs now (renewing its lease); a failure
        is put right by the next renewal."""
        try:
            async with counters.lock:
                await self._turns.hold(tenant_id, self.holder, counters.shared, now=self.wall())
        except SalonError as exc:
            log.warning("running turns of a tenant not updated in the shared counts (%s); the renewal retries", exc)

    def start(self) -> None:
        """Record tokens and renew this gateway's leases in the background."""
        if self._closed:
            return
        self.meter.start()
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name="salon-turn-leases")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._renew_s)  # wait-ok: the lease renewal's period
            try:
                await self._renew_once()
            except Exception:
                log.exception("renewing the leases of running turns failed; trying again")

    async def _renew_once(self) -> None:
        for tenant_id, counters in list(self._tenants.items()):
            if counters.shared:
                await self._hold(tenant_id, counters)

    async def flush(self) -> bool:
        """Record the tokens counted so far now; whether they all landed."""
        return await self.meter.flush()

    async def close(self) -> None:
        """Stop the background work: the last tokens recorded, running turns given back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await stop_tasks([renewer])
        if self._releases:
            await asyncio.wait(set(self._releases))
        for tenant_id, counters in list(self._tenants.items()):
            if counters.shared:
                counters.shared = 0
                await self._hold(tenant_id, counters)
        await self.meter.close()

    async def add_usage(self, tenant_id: str, turn_id: str, usage: turn_pb2.Usage) -> None:
        """Count a turn's tokens (once per turn id, so replays of a finished turn are free); recorded in the
        shared counters with the next flush."""
        if turn_id in self._counted:
            return
        self._counted[turn_id] = None
        if len(self._counted) > _COUNTED_TURNS:
            self._counted.popitem(last=False)
        self.meter.add(tenant_id, self._day(), total_tokens(usage))

    async def metered(
        self, tenant_id: str, slot: TurnSlot, events: AsyncIterator[turn_pb2.TurnEvent]
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Relay a new turn's events, counting its usage; its slot is released when the stream ends."""
        try:
            async for event in self.counted(tenant_id, events):
                yield event
        finally:
            released = slot.release()
            if released is not None:
                # Given back before the call ends, so the caller's next turn finds its place free on any gateway.
                await asyncio.shield(released)

    async def counted(
        self, tenant_id: str, events: AsyncIterator[turn_pb2.TurnEvent]
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Relay a turn's events counting its usage (once per turn: a resumed stream counts what an abandoned
        one did not)."""
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if event.HasField("usage"):
                    await self.add_usage(tenant_id, event.turn_id, event.usage)
                yield event

    async def check_new_session(self, tenant_id: str) -> None:
        """Raise :class:`ResourceExhausted` when the tenant already has its maximum of sessions."""
        limit = self._policy_for(tenant_id).limits.max_sessions
        if limit and self._count_sessions is not None and await self._count_sessions(tenant_id) >= limit:
            raise ResourceExhausted(
                f"this tenant may keep {limit} sessions; delete some first", reason=Reason.MAX_SESSIONS
            )

    async def usage(self, tenant_id: str) -> Usage:
        """The tenant's figures now."""
        counters = self._counters(tenant_id)
        limits = self._policy_for(tenant_id).limits
        turns, active = len(counters.turns), counters.active
        if _turn_limits(limits) is not None:
            figures = await self._turns.figures(tenant_id, now=self.wall())
            turns, active = figures.turns_last_minute, figures.concurrent_turns
        sessions = await self._count_sessions(tenant_id) if self._count_sessions is not None else 0
        return Usage(
            tenant_id=tenant_id,
            turns_last_minute=turns,
            concurrent_turns=active,
            tokens_today=await self.meter.total(tenant_id, self._day()),
            sessions=sessions,
            limits=limits,
        )

    def known_tenants(self) -> list[str]:
        """Tenants this gateway has counted anything for."""
        return sorted(self._tenants)
