"""A turn's progress is durable: the events a client may have seen outlive nats-server, and a turn handed out
again continues after them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from engine import EmbeddedNats
from salon.v1 import turn_pb2
from storage import Names
from storage.jetstream.bus import BusSettings, EventPublisher, ensure_bus
from storage.jetstream.client import close_connection, connect


def _events(turn_id: str, deltas: list[str]) -> list[turn_pb2.TurnEvent]:
    events = [turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=1, accepted=turn_pb2.TurnAccepted())]
    for seq, text in enumerate(deltas, start=2):
        events.append(
            turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=seq, delta=turn_pb2.TokenDelta(text=text))
        )
    return events


async def test_stored_events_survive_a_killed_nats_server(tmp_path: Path) -> None:
    names = Names("progress")
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    try:
        nc = await connect(url, name="progress-test")
        await ensure_bus(nc.jetstream(), names, BusSettings(num_shards=1))
        events = EventPublisher(nc, names)
        sent = _events("u1", ["Once", " upon", " a"])
        for event in sent:
            await events.publish("acme", event)
        await events.flush("acme", "s1", "u1")
        await events.close()
        await close_connection(nc)

        port, pid = server.port, server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # no shutdown, nothing flushed on the way out
        await server.close()
        server = EmbeddedNats(tmp_path / "nats", port=port)
        url = await server.start()

        nc = await connect(url, name="progress-test-again")
        await ensure_bus(nc.jetstream(), names, BusSettings(num_shards=1))
        again = EventPublisher(nc, names)
        assert await again.sent("acme", "s1", "u1") == sent
        assert await again.sent("acme", "s1", "never") == []
        await again.close()
        await close_connection(nc)
    finally:
        await server.close()
