"""Where a process's asyncio tasks wait: what an operator (or a test that timed out) reads of a host that stopped
making progress."""

from __future__ import annotations

import asyncio

from salon.otel import task_stacks


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
