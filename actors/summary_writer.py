"""The task that keeps a session's rolling summary: after a turn, folds the messages that left the window into
the summary, in the background, so summarising never delays a first token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from salon.actors.model import Message
from salon.actors.state import SessionState
from salon.actors.summary import Summarizer, Summary
from salon.actors.turn import SessionKey, SessionSettings

log = logging.getLogger(__name__)


class SummaryWriter:
    """Owns the summary rewrite of one session: at most one at a time; :meth:`close` cancels and awaits it."""

    def __init__(self, key: SessionKey, settings: SessionSettings, state: SessionState, summarizer: Summarizer) -> None:
        self._key = key
        self._settings = settings
        self._state = state
        self._summarizer = summarizer
        self.task: asyncio.Task[None] | None = None
        """The rewrite in progress (None once it is done: an idle session holds no finished task)."""

    def schedule(self, window: Sequence[Message]) -> None:
        """Start rewriting the summary when enough messages left ``window`` (never while one rewrite runs:
        the next turn's end picks up what this one leaves)."""
        if self.task is not None and not self.task.done():
            return
        folded = self._state.unsummarized(window)
        if len(folded) < max(self._settings.summary_min_messages, 1):
            return
        self.task = asyncio.create_task(self._rewrite(folded), name=f"summary-{self._key}")
        self.task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if self.task is task:
            self.task = None

    async def _rewrite(self, folded: list[Message]) -> None:
        state, settings = self._state, self._settings
        previous = state.summary
        try:
            text = await self._summarizer.summarize(
                previous.text,
                folded,
                max_tokens=settings.summary_max_tokens,
                provider=settings.provider,
                model=settings.model,
            )
        except Exception:
            log.exception("rewriting the summary of session %s failed; the next turn tries again", self._key)
            return
        summary = Summary(text, previous.version + 1, max(m.turn_index for m in folded))
        if state.summary.version == previous.version:
            state.adopt_summary(summary, settings.window_max_messages)

    async def wait(self) -> None:
        """Wait for a rewrite in progress."""
        task = self.task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def close(self) -> None:
        """Stop a rewrite in progress. A rewrite cut short is not lost: the messages stay in the state and the
        next activation redoes it. Idempotent."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
