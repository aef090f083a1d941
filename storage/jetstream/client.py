"""Connecting to NATS: wait for a server's port, then connect with endless reconnects.

A URL may list several servers of a cluster, comma separated (``nats://a:4222,nats://b:4222``): the client
connects to one, learns the others from it, and on losing it reconnects to another. What the engine creates
(streams, key-value buckets) is replicated over the cluster as :func:`stream_replicas` decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from salon.storage.errors import Unavailable
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

JetStream = JetStreamContext
"""The JetStream handle the engine passes between its parts (named here so they need not import nats)."""


REPLICAS = 3
"""Replicas of a stream in a cluster of three or more servers: one server may be lost (killed, upgraded)
without losing an acknowledged write or the stream's availability."""


def server_urls(url: str) -> list[str]:
    """The servers of a NATS URL that may list several, comma separated."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        _, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_for_port(url: str, timeout_s: float) -> None:
    """Wait until one server of ``url`` accepts TCP connections (connecting earlier makes nats-py wait and
    print a traceback), or raise :class:`Unavailable`."""
    servers = server_urls(url)
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        if any(await asyncio.gather(*(_reachable(server) for server in servers))):
            return
        if time.monotonic() >= deadline:
            raise Unavailable("NATS is not reachable", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0)
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
        servers=server_urls(url),
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


def cluster_size(nc: NatsClient) -> int:
    """How many servers the connected server's cluster has, as it told the client (its ``connect_urls``);
    1 for a server outside a cluster. A cluster whose servers do not advertise themselves looks like 1."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, len(set(info.get("connect_urls") or ())))


def stream_replicas(nc: NatsClient, setting: str = "auto") -> int:
    """Replicas of the streams and buckets the engine creates: ``setting`` if it is a number, else
    :data:`REPLICAS` when the cluster has that many servers or more, and 1 otherwise."""
    if setting != "auto":
        return int(setting)
    size = cluster_size(nc)
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if info.get("cluster") and size < REPLICAS:
        log.warning(
            "NATS cluster %r shows %d server(s): streams get one replica (set SALON_NATS_REPLICAS to override)",
            info.get("cluster"),
            size,
        )
    return REPLICAS if size >= REPLICAS else 1


VARZ_SUBJECT = "$SYS.REQ.SERVER.PING.VARZ"


async def servers_without_sync_always(nc: NatsClient, wait_s: float = 0.5) -> list[str] | None:
    """The names of the cluster's servers whose JetStream does not fsync every write (``sync_interval:
    always``), asked through the system account's VARZ request; None when this connection may not ask (it is
    not a system account user: the usual case)."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(VARZ_SUBJECT, b"", reply=inbox)
        await nc.flush(timeout=1)
        await asyncio.sleep(wait_s)  # every server answers; there is no count to wait for
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if not replies:
        return None
    lagging = []
    for reply in replies:
        config = ((reply.get("data") or {}).get("jetstream") or {}).get("config") or {}
        if not config.get("sync_always"):
            lagging.append(str((reply.get("server") or {}).get("name") or "?"))
    return sorted(lagging)


async def warn_unless_synced(nc: NatsClient) -> None:
    """Log whether the NATS servers fsync each JetStream write before acknowledging it: without it a crash of
    a majority of a stream's replicas can lose acknowledged writes (Jepsen's analysis of NATS 2.12). Never
    raises."""
    try:
        lagging = await servers_without_sync_always(nc)
    except Exception:
        lagging = None
    if lagging is None:
        log.info(
            "cannot tell whether the NATS servers fsync every write: make sure each sets "
            "`jetstream { sync_interval: always }`"
        )
    elif lagging:
        log.warning(
            "NATS server(s) %s do not fsync every JetStream write (sync_interval: always): a crash may lose "
            "acknowledged turns",
            ", ".join(lagging),
        )


async def ensure_replicas(
    js: JetStreamContext, stream: str, replicas: int, *, allow_direct: bool | None = None
) -> bool:
    """Give an existing stream ``replicas`` copies (and ``allow_direct`` if given) if it has other settings
    (JetStream changes them in place); True if it changed them."""
    info = await js.stream_info(stream)
    config = info.config
    if config.num_replicas == replicas and (allow_direct is None or bool(config.allow_direct) == allow_direct):
        return False
    log.warning("stream %s: %s replica(s) -> %d", stream, config.num_replicas, replicas)
    config.num_replicas = replicas
    if allow_direct is not None:
        config.allow_direct = allow_direct
    await js.update_stream(config)
    return True
