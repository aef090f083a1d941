"""Memory per live session, as a host holds sessions that have run real turns (issue 15: at most 20 KiB).

    .venv/bin/python -m bench.bench_session_memory --sessions 300 --turns 64

Each session is activated the way a host activates it (its settings from a session definition by
``session_settings``, its state restored from an empty ledger) and runs ``--turns`` turns through its
``SessionActor`` with the scripted provider: user messages of ``--message-chars`` characters, answers of about
as many, the rolling summary written after turns as in a host. The ledger is a stand-in that keeps nothing
(its records are the ledger's memory, not the host's). Then, with the sessions idle, the growth of traced
memory (tracemalloc) since before the first session is divided by the number of sessions, and the largest
allocation sites are listed. Runs in a fresh process: ``python -m`` it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import positive_int
from salon.actors.host import HostSettings, SharedSettings, session_settings
from salon.actors.session import SessionActor, SessionKey, SessionState
from salon.actors.summary import summarizer_for
from salon.actors.tool_loop import ToolStats
from salon.actors.tool_servers import NoToolServers
from salon.actors.turn import LocalInFlight, Turn
from salon.providers.scripted import ScriptedProvider
from salon.storage import LoadedSession, ProgressRecord, SnapshotRecord, TurnRecord, uuid7
from salon.v1 import session_pb2

SYSTEM_PROMPT = "You are a helpful assistant for a small bakery. Answer briefly and politely. " * 3


class _DiscardingLog:
    """A session's ledger handle that keeps nothing (numbers the records as a ledger would)."""

    def __init__(self) -> None:
        self._seq = 0

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        self._seq += 1
        return record.with_seq(self._seq)

    async def append_progress(self, record: ProgressRecord) -> ProgressRecord:
        self._seq += 1
        return record.with_seq(self._seq)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        return None

    async def read_turn(self, seq: int) -> TurnRecord | None:
        return None


def _text(i: int, chars: int) -> str:
    words = [f"word{(i * 7 + n) % 997}" for n in range(chars // 7 + 1)]
    return " ".join(words)[:chars]


async def run(sessions: int, turns: int, message_chars: int) -> dict[str, Any]:
    """Build and run the sessions; the per-session figures."""
    defaults = HostSettings()
    provider = ScriptedProvider(tokens=max(message_chars // 8, 1))
    definition = session_pb2.Session(system_prompt=SYSTEM_PROMPT)
    live: dict[SessionKey, SessionActor] = {}
    shared = SharedSettings()
    # What a host hands every session alike: one summarizer, one set of tool servers and tool figures.
    summarizer, tool_servers, tool_stats = summarizer_for(provider), NoToolServers(), ToolStats()

    async def sink(event: Any) -> None:
        return None

    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(sessions):
        key = SessionKey("tenant-1", uuid7())
        session = session_pb2.Session()
        session.CopyFrom(definition)
        session.session_id = key.session_id
        settings = shared.share(session_settings(session, defaults))
        state = SessionState.restore(LoadedSession(None, []), str(uuid7()), settings.window_max_messages)
        live[key] = SessionActor(
            key,
            settings,
            state,
            provider,
            _DiscardingLog(),
            summarizer=summarizer,
            tool_servers=tool_servers,
            tool_stats=tool_stats,
        )
    for index in range(turns):
        for n, actor in enumerate(live.values()):
            done = asyncio.Event()

            async def finished(done: asyncio.Event = done) -> None:
                done.set()

            turn = Turn(str(uuid7()), _text(index * 31 + n, message_chars))
            await actor.submit(LocalInFlight(turn, sink, finished))
            await done.wait()
        for actor in live.values():
            await actor.wait_summary()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = [
        {"site": str(stat.traceback[0]), "bytes_per_session": stat.size / sessions}
        for stat in snapshot.statistics("lineno")[:15]
    ]
    state = next(iter(live.values())).state
    out = {
        "sessions": sessions,
        "turns": turns,
        "message_chars": message_chars,
        "bytes_per_session": grown / sessions,
        "window_messages": len(state.messages),
        "folding_messages": len(state.folding),
        "recent_turns": len(state.recent),
        "summary_chars": len(state.summary.text),
        "window_text_chars": sum(len(m.text) for m in state.messages),
        "top_sites": top,
    }
    for actor in live.values():
        await actor.close()
    return out


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=positive_int, default=300)
    parser.add_argument("--turns", type=positive_int, default=64, help="turns each session runs (default: 64)")
    parser.add_argument("--message-chars", type=positive_int, default=200, help="user message length (default: 200)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = asyncio.run(run(args.sessions, args.turns, args.message_chars))
    print(
        f"{out['sessions']} sessions x {out['turns']} turns: {out['bytes_per_session'] / 1024:.1f} KiB per session "
        f"(window {out['window_messages']} messages, {out['window_text_chars']} characters; {out['folding_messages']} "
        f"waiting for the summary; summary {out['summary_chars']} characters; {out['recent_turns']} recent turn ids)"
    )
    for site in out["top_sites"]:
        print(f"  {site['bytes_per_session']:8.0f} B  {site['site']}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
