"""Writing a session to its ledger: turn records and the progress of running turns (retried while the ledger is
unreachable, since a turn is not over, nor a step of it taken, until it is recorded) and snapshots of the state
(best effort: they are a cache of the records)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from salon.actors.state import SessionState
from salon.actors.turn import SessionKey
from salon.storage import Fenced, ProgressRecord, Reason, SalonError, SessionLog, SnapshotRecord, TurnRecord

_R = TypeVar("_R")

log = logging.getLogger(__name__)


class Recorder:
    """One session's ledger handle, with the retry rule for turns and the bookkeeping of snapshots."""

    def __init__(
        self,
        key: SessionKey,
        state: SessionState,
        ledger: SessionLog,
        *,
        max_retry_delay_s: float,
        closing: Callable[[], bool],
    ) -> None:
        self._key = key
        self._state = state
        self._ledger = ledger
        self._max_retry_delay_s = max_retry_delay_s
        self._closing = closing
        """Whether the session is closing: then a failed append is not retried."""
        self._snapshot_turn = state.turn_count
        """The turn count of the latest snapshot (the one activation started from counts)."""

    @property
    def incarnation(self) -> str:
        """The incarnation of the session the records are for."""
        return self._state.incarnation

    async def append(self, record: TurnRecord, *, retry: bool) -> TurnRecord:
        """Append ``record``; the stored record (with its ledger sequence). Raises :class:`Fenced` when another
        activation owns the session, and ledger errors when ``retry`` is off or the session is closing."""
        return await self._retrying(lambda: self._ledger.append_turn(record), "a turn", retry=retry)

    async def append_progress(self, record: ProgressRecord, *, retry: bool) -> ProgressRecord:
        """Append a step of a running turn (the same rules as :meth:`append`); the state keeps it until the turn
        is recorded."""
        stored = await self._retrying(lambda: self._ledger.append_progress(record), "a turn's step", retry=retry)
        self._state.note_progress(stored)
        return stored

    async def _retrying(self, append: Callable[[], Awaitable[_R]], what: str, *, retry: bool) -> _R:
        delay = 0.05
        while True:
            try:
                return await append()
            except Fenced:
                raise
            except SalonError as exc:
                if not retry or self._closing() or exc.reason == Reason.PROGRESS_TOO_LARGE:
                    raise
                # Not done until it is recorded: wait for the ledger rather than lose it.
                log.warning("recording %s failed (%s); retrying in %.2f s", what, exc.reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay_s)

    async def read_turn(self, ledger_seq: int) -> TurnRecord | None:
        """The turn recorded at ``ledger_seq`` (None: no longer kept)."""
        return await self._ledger.read_turn(ledger_seq)

    def snapshot_due(self, every_turns: int) -> bool:
        """Whether ``every_turns`` turns were applied since the latest snapshot."""
        return self._state.turn_count - self._snapshot_turn >= every_turns

    async def save_snapshot(self) -> None:
        """Append a snapshot of the state if it changed since the latest one (a failure is only logged:
        activation then replays more records)."""
        state = self._state
        if state.turn_count == self._snapshot_turn:
            return
        snapshot = SnapshotRecord(
            tenant_id=self._key.tenant_id,
            session_id=self._key.session_id,
            incarnation=state.incarnation,
            turn_index=state.turn_count,
            ledger_seq=state.ledger_seq,
            state=state.to_dict(),
            created_at_ns=time.time_ns(),
        )
        try:
            await self._ledger.save_snapshot(snapshot)
            self._snapshot_turn = state.turn_count
        except Exception:
            log.warning("saving a snapshot of session %s failed; activation will replay more", self._key)
