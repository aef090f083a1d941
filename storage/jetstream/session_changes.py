"""The session registry's change feed: every write to the sessions bucket (a session created, deleted or
purged), as it is stored, for a gateway's cache of session definitions (``engine.session_cache``).

One consumer per gateway, delivering only what is written after it starts and only headers (the key is the
subject): no definition crosses the wire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from salon.storage.jetstream.read import drop_consumer
from salon.storage.subjects import Names

FEED_INACTIVE_S = 60.0
"""How long the server keeps a feed whose gateway went away."""


class SessionChanges:
    """Calls ``changed(tenant_id, session_id)`` for every session written after :meth:`start`.

    Lifecycle: :meth:`start`, then :meth:`close` (idempotent)."""

    def __init__(self, js: JetStreamContext, names: Names, changed: Callable[[str, str], None]) -> None:
        self._js = js
        self._bucket = names.sessions_bucket
        self._changed = changed
        self._sub: Any = None

    async def start(self) -> None:
        """Subscribe (changes written once this returns are all reported)."""
        if self._sub is not None:
            return
        self._sub = await self._js.subscribe(
            f"$KV.{self._bucket}.>",
            stream=f"KV_{self._bucket}",
            cb=self._arrived,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            headers_only=True,
            inactive_threshold=FEED_INACTIVE_S,
        )

    async def _arrived(self, msg: Msg) -> None:
        key = msg.subject[len(f"$KV.{self._bucket}.") :]
        tenant_id, _, session_id = key.partition(".")
        self._changed(tenant_id, session_id)

    async def close(self) -> None:
        """Stop the feed. Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await drop_consumer(self._js, sub)
