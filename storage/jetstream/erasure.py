"""Purging a session's turn events from the events stream, and the tool answers kept for its turns (a user's
erasure: they hold the answers' and the tools' text until they age out)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from salon.storage.errors import Unavailable
from salon.storage.ids import require_id
from salon.storage.reasons import Reason
from salon.storage.subjects import Names


def event_purger(js: JetStreamContext, names: Names) -> Callable[[str, str], Awaitable[None]]:
    """Purges the events stream of one session's turns (they hold the answers' text until they age out), and the
    tool answers kept for them."""

    async def purge(tenant_id: str, session_id: str) -> None:
        subject = names.event_subject(require_id(tenant_id, "tenant_id"), require_id(session_id, "session_id"), ">")
        bucket = names.tool_answers_bucket
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # no answer was ever kept
                await js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{tenant_id}.{session_id}.>")
            await js.purge_stream(names.events_stream, subject=subject)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise Unavailable(
                "the event stream is not reachable", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0
            ) from exc

    return purge
