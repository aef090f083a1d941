"""The blocking client's machinery: its private loop thread and the blocking Turn, with a fake stub (no sockets).

These tests are plain (not async) functions: the blocking client is for code without an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from salon.client import Completed, Delta
from salon.client._loop import LoopThread
from salon.client.sync import Turn as SyncTurn
from salon.client.turn import Turn
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class _Call:
    def __init__(self, events: list[turn_pb2.TurnEvent]) -> None:
        self.events = events
        self.loop_threads: set[str] = set()

    def __aiter__(self) -> AsyncIterator[cs_pb2.SendTurnResponse]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[cs_pb2.SendTurnResponse]:
        for e in self.events:
            self.loop_threads.add(threading.current_thread().name)
            yield cs_pb2.SendTurnResponse(event=e)

    def cancel(self) -> bool:
        return True


class _Stub:
    def __init__(self, call: _Call) -> None:
        self.call = call

    def SendTurn(self, request: Any, **kwargs: Any) -> _Call:
        return self.call

    def ResumeTurn(self, request: Any, **kwargs: Any) -> _Call:
        raise AssertionError("not expected")

    async def CancelTurn(self, request: Any, **kwargs: Any) -> cs_pb2.CancelTurnResponse:
        return cs_pb2.CancelTurnResponse()


def _events() -> list[turn_pb2.TurnEvent]:
    events = [turn_pb2.TurnEvent(seq=1, turn_id="k", accepted=turn_pb2.TurnAccepted())]
    events += [turn_pb2.TurnEvent(seq=i, turn_id="k", delta=turn_pb2.TokenDelta(text=f"w{i} ")) for i in (2, 3)]
    events.append(turn_pb2.TurnEvent(seq=4, turn_id="k", completed=turn_pb2.TurnCompleted()))
    return events


@pytest.fixture
def loop() -> Any:
    runner = LoopThread()
    yield runner
    runner.close()


def _turn(call: _Call) -> Turn:
    request = cs_pb2.SendTurnRequest(session_id="s", text="hi", idempotency_key="k")
    return Turn(_Stub(call), session_id="s", turn_id="k", request=request)


def test_blocking_turn_iterates_typed_events_on_the_private_loop(loop: LoopThread) -> None:
    call = _Call(_events())
    turn = SyncTurn(loop, loop.run(_make(call)))
    kinds = [type(e).__name__ for e in turn]
    assert kinds == ["Accepted", "Delta", "Delta", "Completed"]
    assert turn.text == "w2 w3 " and turn.done and isinstance(turn.final, Completed)
    assert call.loop_threads == {"salon-client-loop"}
    assert list(turn) == []  # exhausted: stays exhausted


async def _make(call: _Call) -> Turn:
    return _turn(call)


def test_blocking_turn_can_stop_early_and_be_closed(loop: LoopThread) -> None:
    with SyncTurn(loop, loop.run(_make(_Call(_events())))) as turn:
        for e in turn:
            if isinstance(e, Delta):
                break
    assert not turn.done and turn.last_seq == 2
    turn.close()  # idempotent


def test_loop_thread_runs_coroutines_returns_results_and_raises_their_errors(loop: LoopThread) -> None:
    async def answer() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise KeyError("boom")

    assert loop.run(answer()) == "salon-client-loop"
    with pytest.raises(KeyError):
        loop.run(fail())


def test_a_blocking_call_from_the_loop_itself_is_refused(loop: LoopThread) -> None:
    async def reenter() -> None:
        loop.run(asyncio.sleep(0))  # wait-ok: a no-op coroutine to run

    with pytest.raises(RuntimeError, match="own event loop"):
        loop.run(reenter())


def test_close_cancels_leftover_work_stops_the_thread_and_is_idempotent() -> None:
    runner = LoopThread()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(forever())

    task = runner.run(spawn())
    assert started.wait(5.0)
    runner.close()
    runner.close()
    assert task.cancelled() and runner.closed
    assert not any(t.name == "salon-client-loop" and t.is_alive() for t in threading.enumerate())
    coro = asyncio.sleep(0)  # wait-ok: a no-op coroutine to run
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(coro)
