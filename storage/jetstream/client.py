"""Connecting to NATS: wait for the port, then connect with endless reconnects."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from salon.storage.errors import Unavailable
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

JetStream = JetStreamContext
"""The JetStream handle the engine passes between its parts (named here so they need not import nats)."""


async def wait_for_port(url: str, timeout_s: float) -> None:
    """Wait until the server behind ``url`` accepts TCP connections (connecting earlier makes nats-py wait
    and print a traceback), or raise :class:`Unavailable`."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise Unavailable("NATS is not reachable", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)


async def connect(
    url: str,
    *,
    name: str,
    timeout_s: float = 10.0,
    on_state: Callable[[bool], Awaitable[None]] | None = None,
) -> NatsClient:
    """Connect to ``url``; the connection then reconnects forever. ``on_state(connected)`` is called on
    every disconnect and reconnect."""
    await wait_for_port(url, timeout_s)
    holder: list[NatsClient] = []

    async def disconnected() -> None:
        if holder and (holder[0].is_closed or holder[0].is_draining):
            return  # our own shutdown, not an outage
        log.warning("NATS connection lost; reconnecting", extra={"nats_client": name})
        if on_state is not None:
            await on_state(False)

    async def reconnected() -> None:
        log.info("NATS connection restored", extra={"nats_client": name})
        if on_state is not None:
            await on_state(True)

    async def error(exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    nc = await nats.connect(
        url,
        name=name,
        connect_timeout=timeout_s,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        allow_reconnect=True,
    )
    holder.append(nc)
    return nc


async def close_connection(nc: NatsClient, timeout_s: float = 5.0) -> None:
    """Drain ``nc`` (flush what it buffered, finish subscriptions), closing it outright after ``timeout_s``:
    a subscription with a request in flight would otherwise hold the drain for nats-py's 30 s default.

    During an outage (the connection is reconnecting) nothing can be flushed: it is closed at once, and what
    it buffered for the server is dropped. Never raises: the caller is shutting down."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await asyncio.wait_for(nc.drain(), timeout_s)
            return
        except Exception:
            log.warning("NATS connection did not drain in time; closing it")
    if nc.is_closed:
        return
    if not nc.is_connected:
        _drop_buffered(nc)
    try:
        await asyncio.wait_for(nc.close(), timeout_s)
    except Exception as exc:
        log.warning("closing the NATS connection failed (%s)", type(exc).__name__)


def _drop_buffered(nc: NatsClient) -> None:
    # nats-py (2.16) writes the publishes it buffered while reconnecting to the dead transport on close();
    # that raises before the subscriptions are released, leaving their readers waiting. They cannot be
    # delivered anyway: drop them first.
    if isinstance(getattr(nc, "_pending", None), list):
        nc._pending = []
        nc._pending_data_size = 0
