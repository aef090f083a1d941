"""A process's asyncio tasks: where each waits (what an operator, or a test that timed out, reads of a host that
stopped making progress), and background tasks stopped for sure even when a library swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from salon.otel import stop_tasks, task_stacks


async def _wait_on(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _wait_on(event)


async def test_each_task_is_named_with_the_chain_of_awaits_it_waits_in() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_outer(event), name="stuck-here")
    await asyncio.sleep(0)  # wait-ok: one turn of the loop lets the task reach its await
    try:
        lines = [line for line in task_stacks() if line.startswith("stuck-here:")]
        assert len(lines) == 1
        chain = lines[0].removeprefix("stuck-here: ").split(" > ")
        # Outermost first, down to the asyncio primitive the task waits in, each with a line number.
        assert [c.split(":")[0] for c in chain[:2]] == ["test_task_stacks._outer", "test_task_stacks._wait_on"]
        assert chain[-1].startswith("locks.wait:")
        assert all(c.rsplit(":", 1)[1].isdigit() for c in chain)
    finally:
        event.set()
        await task
    assert not [line for line in task_stacks() if line.startswith("stuck-here:")], "an ended task is not listed"


async def test_arguments_and_values_stay_out_of_the_lines() -> None:
    secret = "a user's message"

    async def holds(text: str, event: asyncio.Event) -> None:
        await event.wait()

    event = asyncio.Event()
    task = asyncio.create_task(holds(secret, event), name="holder")
    await asyncio.sleep(0)  # wait-ok: one turn of the loop lets the task reach its await
    try:
        lines = task_stacks()
        assert any(line.startswith("holder:") for line in lines)
        assert not any(secret in line for line in lines)
    finally:
        event.set()
        await task


async def test_a_loop_whose_cancellation_is_swallowed_is_cancelled_again_until_it_ends() -> None:
    rounds = 0
    swallowed = 0

    async def swallowing_flush() -> None:
        # As nats-py 2.16's flush does, once: a cancellation landing in it is dropped.
        nonlocal swallowed
        if swallowed:
            await asyncio.Event().wait()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed += 1

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await swallowing_flush()

    task = asyncio.create_task(loop(), name="renewals")
    await asyncio.sleep(0)  # wait-ok: one turn of the loop lets the task reach its await
    await asyncio.wait_for(stop_tasks([task], recancel_s=0.05), 10)
    assert task.cancelled()
    assert swallowed == 1 and rounds == 2, "the first cancellation was swallowed, the second ended it"


async def test_a_task_that_failed_raises_its_error_and_the_others_are_still_stopped() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    async def waits() -> None:
        await asyncio.Event().wait()

    failing = asyncio.create_task(fails())
    waiting = asyncio.create_task(waits())
    await asyncio.sleep(0)  # wait-ok: one turn of the loop lets the first task fail
    with pytest.raises(ValueError, match="broken"):
        await stop_tasks([waiting, failing])
    assert waiting.cancelled()
