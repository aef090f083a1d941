"""Reading what a JetStream stream holds on a subject, to the end, with an exact stopping point."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

FETCH_BATCH = 256
EPHEMERAL_INACTIVE_S = 5.0
"""Safety net for ephemeral consumers we fail to delete. Streams cap their consumers (1,000 by default), and
one is made per turn reader: left to a long inactivity timeout they pile up under load."""


async def drop_consumer(js: JetStreamContext, sub: Any) -> None:
    """Unsubscribe and delete ``sub``'s ephemeral consumer now (unsubscribing alone leaves it on the server
    until its inactivity timeout). Best effort: the timeout still removes it."""
    stream, name = getattr(sub, "_stream", None), getattr(sub, "_consumer", None)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    if stream and name:
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)


async def read_subject(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    start_seq: int = 0,
    last_per_subject: bool = False,
    headers_only: bool = False,
) -> list[Msg]:
    """Every message on ``subject`` (wildcards allowed) from ``start_seq`` (or the last per subject), in order.

    A pull consumer is used because nothing is delivered before the first fetch, so its pending count is
    exact: push consumers (and nats-py's KV watcher built on them) can report "nothing pending" while
    messages are already in flight.
    """
    if last_per_subject:
        policy, seq = api.DeliverPolicy.LAST_PER_SUBJECT, None
    elif start_seq > 0:
        policy, seq = api.DeliverPolicy.BY_START_SEQUENCE, start_seq
    else:
        policy, seq = api.DeliverPolicy.ALL, None
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=api.ConsumerConfig(
            deliver_policy=policy,
            opt_start_seq=seq,
            ack_policy=api.AckPolicy.NONE,
            headers_only=headers_only or None,
            inactive_threshold=EPHEMERAL_INACTIVE_S,
        ),
    )
    out: list[Msg] = []
    try:
        remaining = (await sub.consumer_info()).num_pending or 0
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, FETCH_BATCH), timeout=5.0)
            out.extend(msgs)
            remaining = (msgs[-1].metadata.num_pending or 0) if msgs else 0
    finally:
        await drop_consumer(js, sub)
    return out


KV_DELETED = ("DEL", "PURGE")
"""``KV-Operation`` header values of a key-value entry that removes its key."""


async def live_entries(js: JetStreamContext, bucket: str, keys: str = ">", *, headers_only: bool = False) -> list[Msg]:
    """The latest message of every live key of the key-value ``bucket`` matching ``keys`` (a subject pattern of
    key tokens), in stream order: exact, unlike nats-py's watcher (see :func:`read_subject`)."""
    subject = f"$KV.{bucket}.{keys}"
    msgs = await read_subject(js, f"KV_{bucket}", subject, last_per_subject=True, headers_only=headers_only)
    return [m for m in msgs if (m.headers or {}).get("KV-Operation") not in KV_DELETED]
