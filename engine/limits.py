"""Per-tenant limits and budgets, counted at the gateway: turns per minute, concurrent turns, tokens per
day (from the usage events of the turns it relays), message size and number of sessions.

Exceeding one ends the call with ``RESOURCE_EXHAUSTED``, the limit's name as reason (``TURNS_PER_MINUTE``,
``CONCURRENT_TURNS``, ``TOKENS_PER_DAY``, ``MESSAGE_TOO_LARGE``, ``MAX_SESSIONS``) and, where waiting helps, a
retry hint. Token totals are shared by every gateway (``storage.KvTokenCounters``), as are sessions (the
registry); turns per minute and concurrent turns are counted in this gateway's memory, so behind N gateways a
tenant can reach N times those two.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from salon.actors.usage import total_tokens
from salon.engine.tenants import Limits, TenantPolicy
from salon.storage.errors import ResourceExhausted, SalonError
from salon.storage.inmemory import InMemoryTokenCounters
from salon.storage.reasons import Reason
from salon.storage.usage import TokenCounters
from salon.v1 import turn_pb2

log = logging.getLogger(__name__)

WINDOW_S = 60.0
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
    __slots__ = ("active", "turns")

    def __init__(self) -> None:
        self.turns: collections.deque[float] = collections.deque()
        self.active = 0


class TurnSlot:
    """A running turn's place in its tenant's concurrency limit; :meth:`release` once (idempotent)."""

    def __init__(self, counters: _Counters) -> None:
        self._counters: _Counters | None = counters

    def release(self) -> None:
        """Give the place back."""
        counters, self._counters = self._counters, None
        if counters is not None:
            counters.active -= 1


class TenantLimiter:
    """Applies each tenant's :class:`Limits`. ``clock`` (monotonic seconds) and ``wall`` (epoch seconds, for
    the UTC day of the token budget) are injectable so tests move time instead of waiting for it."""

    def __init__(
        self,
        policy_for: Callable[[str], TenantPolicy],
        *,
        count_sessions: Callable[[str], Awaitable[int]] | None = None,
        tokens: TokenCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._policy_for = policy_for
        self._count_sessions = count_sessions
        self._tokens = tokens if tokens is not None else InMemoryTokenCounters()
        self.clock = clock
        self.wall = wall
        self._tenants: dict[str, _Counters] = collections.defaultdict(_Counters)
        self._counted: collections.OrderedDict[str, None] = collections.OrderedDict()

    def _counters(self, tenant_id: str) -> _Counters:
        counters = self._tenants[tenant_id]
        now = self.clock()
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
        if limits.tokens_per_day and await self._tokens.get(tenant_id, self._day()) >= limits.tokens_per_day:
            until_midnight = DAY_S - self.wall() % DAY_S
            raise ResourceExhausted(
                "this tenant's tokens for today are used up (the budget resets at 00:00 UTC)",
                reason=Reason.TOKENS_PER_DAY,
                retry_after_s=until_midnight,
            )
        counters = self._counters(tenant_id)
        now = self.clock()
        if limits.turns_per_minute and len(counters.turns) >= limits.turns_per_minute:
            raise ResourceExhausted(
                f"this tenant may start {limits.turns_per_minute} turns per minute",
                reason=Reason.TURNS_PER_MINUTE,
                retry_after_s=max(counters.turns[0] + WINDOW_S - now, 0.001),
            )
        if limits.concurrent_turns and counters.active >= limits.concurrent_turns:
            raise ResourceExhausted(
                f"this tenant may run {limits.concurrent_turns} turns at once",
                reason=Reason.CONCURRENT_TURNS,
                retry_after_s=1.0,
            )
        counters.turns.append(now)
        counters.active += 1
        return TurnSlot(counters)

    async def add_usage(self, tenant_id: str, turn_id: str, usage: turn_pb2.Usage) -> None:
        """Count a turn's tokens (once per turn id, so replays of a finished turn are free)."""
        if turn_id in self._counted:
            return
        self._counted[turn_id] = None
        if len(self._counted) > _COUNTED_TURNS:
            self._counted.popitem(last=False)
        try:
            await self._tokens.add(tenant_id, self._day(), total_tokens(usage))
        except SalonError as exc:
            # The answer goes on; only the budget misses these tokens.
            log.warning("tokens of a turn not counted: %s", exc.message)

    async def metered(
        self, tenant_id: str, slot: TurnSlot, events: AsyncIterator[turn_pb2.TurnEvent]
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Relay a new turn's events, counting its usage; its slot is released when the stream ends."""
        try:
            async for event in self.counted(tenant_id, events):
                yield event
        finally:
            slot.release()

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
        sessions = await self._count_sessions(tenant_id) if self._count_sessions is not None else 0
        return Usage(
            tenant_id=tenant_id,
            turns_last_minute=len(counters.turns),
            concurrent_turns=counters.active,
            tokens_today=await self._tokens.get(tenant_id, self._day()),
            sessions=sessions,
            limits=self._policy_for(tenant_id).limits,
        )

    def known_tenants(self) -> list[str]:
        """Tenants this gateway has counted anything for."""
        return sorted(self._tenants)
