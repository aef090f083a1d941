"""The batch writer's ack floor on the JetStream ledger: the :data:`salon.storage.history.StoredFloor` of a
deployment, read from the writer's durable consumer (whichever process runs the writer)."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from salon.storage.errors import Unavailable
from salon.storage.history import StoredFloor
from salon.storage.subjects import Names


def writer_ack_floor(js: JetStreamContext, names: Names) -> StoredFloor:
    """A floor that asks the ledger for the writer consumer's ack floor: every ledger entry at or below it
    was acknowledged, and the writer acknowledges an entry only once it is stored."""

    async def floor() -> int:
        try:
            info = await js.consumer_info(names.ledger_stream, names.writer_consumer)
        except nats.js.errors.NotFoundError:
            return 0  # no writer consumer yet: nothing is known to be stored
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise Unavailable("the ledger is not reachable", reason="LEDGER_UNAVAILABLE", retry_after_s=1.0) from exc
        return int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0

    return floor
