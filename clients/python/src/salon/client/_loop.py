"""A private asyncio event loop in a background thread, for the blocking client."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread, owned by one blocking client.

    :meth:`run` hands a coroutine to the loop and blocks the calling thread until it finishes; an interrupt
    (Ctrl-C) while blocked cancels the coroutine. :meth:`close` cancels what is left, stops the loop and joins
    the thread.
    """

    def __init__(self, name: str = "salon-client-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception)."""
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking client call from its own event loop would wait for itself forever")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (KeyboardInterrupt): do not leave the call running behind our back
            raise

    def close(self) -> None:
        """Cancel every task still on the loop, close open async generators, stop the loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("the client cannot be closed from its own event loop")
        with contextlib.suppress(RuntimeError):  # the loop may already be stopped
            asyncio.run_coroutine_threadsafe(_shutdown(self._loop), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks(loop) if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()


_END: Any = object()


async def next_or_end(iterator: AsyncIterator[T]) -> T:
    """The next item of ``iterator``, or the :data:`_END` marker when it is exhausted.

    (``StopAsyncIteration`` must not cross into the calling thread's future.)"""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]


def is_end(item: object) -> bool:
    """Whether ``item`` is the marker :func:`next_or_end` returns at the end."""
    return item is _END
