"""Decisions about tool calls that wait for a person's approval, and the application callback that makes them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from salon.client.events import ApprovalRequired
from salon.client.tools import is_async_callable

__all__ = ["ApprovalHandler", "Decision", "approve", "decide", "reject"]


@dataclass(frozen=True)
class Decision:
    """Approve or reject one call. ``reason`` is what the model is told (for a rejection) and what the record
    keeps; ``approver`` names who decided, as the application knows them (recorded with the caller's
    credentials)."""

    approved: bool
    reason: str = ""
    approver: str = ""


def approve(reason: str = "", *, approver: str = "") -> Decision:
    """An approval."""
    return Decision(True, reason, approver)


def reject(reason: str = "", *, approver: str = "") -> Decision:
    """A rejection; the model sees ``reason``."""
    return Decision(False, reason, approver)


ApprovalHandler: TypeAlias = Callable[
    [ApprovalRequired], "Decision | bool | Awaitable[Decision] | Awaitable[bool] | Awaitable[Decision | bool]"
]
"""An application's callback deciding a call that waits for approval: gets the :class:`ApprovalRequired` event,
returns a :class:`Decision` (or ``True``/``False``), sync or async. A plain function runs in a worker thread, so
it may block (ask a person, call a service)."""


async def decide(handler: ApprovalHandler, request: ApprovalRequired) -> Decision:
    """Run ``handler`` on ``request`` and return its decision."""
    if is_async_callable(handler):
        value = await handler(request)  # type: ignore[misc]
    else:
        value = await asyncio.to_thread(handler, request)
        if inspect.isawaitable(value):
            value = await value
    if isinstance(value, Decision):
        return value
    if isinstance(value, bool):
        return Decision(value)
    raise TypeError(f"an approval handler must return a Decision or a bool, not {type(value).__name__}")
