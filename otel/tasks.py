"""Where a process's asyncio tasks wait: for a host that stops making progress, the line each task is stuck on
(a thread dump shows only the event loop's ``select``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import FrameType
from typing import Any


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
