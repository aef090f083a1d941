"""A process's asyncio tasks: where each waits (for a host that stops making progress: a thread dump shows only
the event loop's ``select``), and stopping background tasks for sure (:func:`stop_tasks`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_S = 1.0
"""How long a cancelled task may run on before it is cancelled again."""


def _innermost(coro: Any) -> list[FrameType]:
    """The frames of ``coro``'s chain of awaits, outermost first."""
    frames: list[FrameType] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        # A future (no frame) ends the chain: that is what the task waits for.
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def task_stacks(limit: int = 200) -> list[str]:
    """One line per pending task of the running loop (at most ``limit``): its name and each function of its chain
    of awaits with the line it waits on. Names and lines only: no arguments, so no content."""
    lines: list[str] = []
    for task in list(asyncio.all_tasks())[:limit]:
        frames = _innermost(task.get_coro())
        chain = [f"{Path(f.f_code.co_filename).stem}.{f.f_code.co_name}:{f.f_lineno}" for f in frames]
        lines.append(f"{task.get_name()}: {' > '.join(chain) or 'not started'}")
    return sorted(lines)


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, recancel_s: float = RECANCEL_S) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that runs on past ``recancel_s``:
    a cancellation can be swallowed (Python 3.11's ``asyncio.wait_for``, which nats-py's requests use, returns the
    result of a future that completed as the cancellation landed; nats-py 2.16's buffer flush drops one outright),
    and a loop that never sees it would keep its owner's shutdown waiting forever. Their cancellations are not
    raised; an exception a task ended with is."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=recancel_s)
        for task in pending:
            log.warning("task %s ran on after it was cancelled; cancelling it again", task.get_name())
            task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
