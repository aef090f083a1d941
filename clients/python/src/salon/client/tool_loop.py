"""The client's side of a turn's tool calls: run the application's functions and submit what they return, and
hand approvals to the application's callback.

A :class:`ToolLoop` belongs to one turn. The turn shows it every event, in order; the loop starts a task per
call it answers (several calls of one model round run at once) and per approval it decides, and the turn
keeps streaming meanwhile. Submitting retries on the retryable statuses of the turn's :class:`RetryPolicy`
for up to its ``max_elapsed_s`` (an answer given twice counts once; the engine says UNAVAILABLE while a
waiting turn's host is being replaced); a call that is no longer waiting (``NOT_FOUND``: the turn ended, its
deadline passed) is dropped; a result over the engine's size limit is replaced by an error saying so. Any
other failure, and an exception in the approval callback, is kept in :attr:`ToolLoop.failure` and raised by
the turn's iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import grpc

from salon.client.approvals import ApprovalHandler, Decision, decide
from salon.client.errors import SalonError
from salon.client.events import (
    Accepted,
    ApprovalDecided,
    ApprovalRequired,
    Event,
    ToolCall,
    ToolResult,
)
from salon.client.retry import RetryPolicy
from salon.client.tools import Tool, Toolbox, ToolOutcome

__all__ = ["ToolAnswers", "ToolLoop"]

T = TypeVar("T")

log = logging.getLogger("salon.client.tools")

RESULT_TOO_LARGE = "TOOL_RESULT_TOO_LARGE"


class ToolAnswers(Protocol):
    """Where a turn's answers go (the unary RPCs, or the Converse stream). Each returns ``True`` when the
    engine already had an answer (a duplicate) and raises :class:`SalonError` when it refuses one."""

    async def submit_tool_result(self, call_id: str, result: str) -> bool: ...

    async def submit_tool_error(self, call_id: str, error: str) -> bool: ...

    async def decide_approval(self, call_id: str, decision: Decision) -> bool: ...


class ToolLoop:
    """Answers one turn's tool calls with the functions of a :class:`Toolbox` and its approvals with an
    :data:`ApprovalHandler` (either may be missing: those calls and approvals are left to the application)."""

    def __init__(
        self,
        answers: ToolAnswers,
        toolbox: Toolbox | None,
        on_approval: ApprovalHandler | None,
        *,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._answers = answers
        self._toolbox = toolbox
        self._on_approval = on_approval
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._calls: dict[str, ToolCall] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failed: asyncio.Future[None] | None = None
        self._closed = False
        self.answered: dict[str, ToolOutcome] = {}
        """The calls this loop answered, by call id, with what it submitted."""
        self.decided: dict[str, Decision] = {}
        """The approvals this loop's callback decided, by call id."""

    @property
    def busy(self) -> bool:
        """Whether a call or an approval is being worked on."""
        return bool(self._tasks)

    @property
    def failure(self) -> BaseException | None:
        """Why the loop could not do its job, once that happened."""
        if self._failed is None or not self._failed.done() or self._failed.cancelled():
            return None
        return self._failed.exception()

    def observe(self, event: Event) -> None:
        """Take the turn's next event: start what it calls for."""
        if self._closed:
            return
        if isinstance(event, Accepted) and event.replayed:
            self._closed = True  # a finished turn's record: every call in it was answered long ago
        elif isinstance(event, ToolCall):
            self._calls[event.call_id] = event
            if not event.requires_approval:
                self._maybe_run(event)
        elif isinstance(event, ApprovalRequired):
            self._approval_required(event)
        elif isinstance(event, ApprovalDecided):
            self._approval_decided(event)
        elif isinstance(event, ToolResult):
            self._result_arrived(event)
        elif event.terminal:
            self._closed = True
            for key in list(self._tasks):
                self._stop(key)

    def _approval_required(self, event: ApprovalRequired) -> None:
        if self._on_approval is not None:
            self._start(f"approval:{event.call_id}", self._decide(self._on_approval, event))

    def _approval_decided(self, event: ApprovalDecided) -> None:
        self._stop(f"approval:{event.call_id}")  # decided (here or elsewhere): stop asking
        call = self._calls.get(event.call_id)
        if event.approved and call is not None:
            self._maybe_run(call)

    def _result_arrived(self, event: ToolResult) -> None:
        # The call has its result (a timeout, a rejection, a cancel, another client's): stop its function. An
        # answer of ours already on its way is left to finish (the event may overtake its response).
        if event.call_id not in self.answered:
            self._stop(f"call:{event.call_id}")
        self._stop(f"approval:{event.call_id}")

    async def race(self, step: Awaitable[T]) -> T:
        """Await ``step`` (the turn's next event), unless the loop fails first: then raise its failure."""
        if self.failure is not None:
            raise self.failure
        if not self._tasks:
            return await step
        failed = self._failed_future()
        pending = asyncio.ensure_future(step)
        try:
            await asyncio.wait((pending, failed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            pending.cancel()
            raise
        if pending.done():
            return pending.result()
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        raise failed.exception() or RuntimeError("the tool loop failed")

    async def aclose(self) -> None:
        """Stop every call and approval still being worked on. Idempotent."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # The machinery.

    def _failed_future(self) -> asyncio.Future[None]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    def _fail(self, error: BaseException) -> None:
        future = self._failed_future()
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved here: the turn raises it, or nobody was listening any more

    def _maybe_run(self, call: ToolCall) -> None:
        found = self._toolbox.runner_for(call) if self._toolbox is not None else None
        if found is not None and call.call_id not in self.answered:
            self._start(f"call:{call.call_id}", self._run(found, call))

    def _start(self, key: str, job: Coroutine[Any, Any, None]) -> None:
        if key in self._tasks:
            job.close()  # already being worked on (a stream never repeats an event; be safe anyway)
            return
        task = asyncio.ensure_future(job)
        self._tasks[key] = task
        task.add_done_callback(lambda t, key=key: self._done(key, t))  # type: ignore[misc]

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(error)

    def _stop(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def _run(self, found: Tool, call: ToolCall) -> None:
        outcome = await found.run(call)
        self.answered[call.call_id] = outcome
        await self._submit(call.call_id, outcome)

    async def _submit(self, call_id: str, outcome: ToolOutcome) -> None:
        try:
            if outcome.error is not None:
                await self._with_retries(lambda: self._answers.submit_tool_error(call_id, outcome.error or ""))
            else:
                await self._with_retries(lambda: self._answers.submit_tool_result(call_id, outcome.result or ""))
        except SalonError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                log.debug("tool call %s is no longer waiting (%s); its result was dropped", call_id, exc.reason)
                return
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT and exc.reason == RESULT_TOO_LARGE:
                size = len((outcome.result or outcome.error or "").encode("utf-8", "replace"))
                smaller = ToolOutcome(error=f"The tool's result was {size} bytes, over the engine's size limit.")
                self.answered[call_id] = smaller
                await self._submit(call_id, smaller)
                return
            raise

    async def _decide(self, handler: ApprovalHandler, request: ApprovalRequired) -> None:
        decision = await decide(handler, request)
        self.decided[request.call_id] = decision
        try:
            await self._with_retries(lambda: self._answers.decide_approval(request.call_id, decision))
        except SalonError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            log.debug("tool call %s no longer waits for approval (%s)", request.call_id, exc.reason)

    async def _with_retries(self, send: Callable[[], Awaitable[bool]]) -> bool:
        # Bounded by time, not by count: the engine answers UNAVAILABLE for as long as the turn's host is being
        # replaced (the turn waits durably meanwhile), and an answer sent twice counts once.
        policy = self._retry
        started = self._clock()
        failures = 0
        while True:
            try:
                return await send()
            except SalonError as exc:
                failures += 1
                if exc.code not in policy.retry_codes or policy.max_retries == 0:
                    raise
                delay = policy.backoff_s(failures, self._rng, exc.retry_after_s)
                if self._clock() + delay - started > policy.max_elapsed_s:
                    raise
                await self._sleep(delay)
