"""The rolling summary: rewritten after turns, off the path of the next turn, versioned, kept in snapshots and
recovered from the ledger records after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from unit_support import EventLog, local, wait_for

from salon.actors.model import Message, ModelChunk, ModelRequest, ModelResult, TextDelta
from salon.actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.actors.summary import (
    ExtractiveSummarizer,
    ModelSummarizer,
    Summary,
    extractive_summary,
    summarizer_for,
)
from salon.providers import OfflineProvider, ScriptedProvider
from salon.storage.inmemory import InMemoryJournal

KEY = SessionKey("acme", "s1")
INCARNATION = "1"
SETTINGS = SessionSettings(window_max_messages=6, summary_min_messages=2, snapshot_every_turns=1000)


async def activate(journal: InMemoryJournal, **kwargs: object) -> SessionActor:
    loaded, log = await journal.open(KEY.tenant_id, KEY.session_id, INCARNATION, "host")
    state = SessionState.restore(loaded, INCARNATION, SETTINGS.window_max_messages)
    return SessionActor(KEY, SETTINGS, state, ScriptedProvider(tokens=3), log, **kwargs)  # type: ignore[arg-type]


async def run(actor: SessionActor, turn_id: str, text: str) -> None:
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    await actor.submit(local(Turn(turn_id, text), EventLog(), on_done))
    await asyncio.wait_for(done.wait(), 5)
    await actor.wait_summary()


def test_extractive_summary_keeps_newest_lines_within_budget() -> None:
    messages = [Message("user", f"fact number {i} " * 3, f"t{i}", i) for i in range(1, 40)]
    text = extractive_summary("", messages, max_tokens=60)
    assert len(text) <= 60 * 4
    assert "turn 39" in text and "turn 1:" not in text


async def test_summary_is_versioned_and_moves_with_the_window() -> None:
    journal = InMemoryJournal()
    actor = await activate(journal)
    versions = []
    for i in range(1, 9):
        await run(actor, f"t{i}", f"message {i} about topic{i}")
        versions.append(actor.state.summary.version)
    # The window holds 6 messages (5 before the new one: two whole turns); older ones are folded two at a time.
    assert versions[:2] == [0, 0]
    assert versions == sorted(versions) and versions[-1] >= 3
    assert "topic1" in actor.state.summary.text
    assert actor.state.summary.through_turn_index >= 5
    # Messages the summary covers are forgotten beyond the window's reach.
    assert all(m.turn_index > actor.state.summary.through_turn_index - 3 for m in actor.state.messages)
    await actor.close()


async def test_a_turn_not_to_remember_stays_in_the_window_but_out_of_the_summary() -> None:
    journal = InMemoryJournal()
    actor = await activate(journal)
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    await actor.submit(local(Turn("t1", "the vault code is vaultcode8842", do_not_remember=True), EventLog(), on_done))
    await asyncio.wait_for(done.wait(), 5)
    assert "vaultcode8842" in actor.state.messages[0].text  # the window holds it while it reaches it
    assert SessionState.from_dict(actor.state.to_dict()).forgotten == {"t1"}
    for i in range(2, 9):
        await run(actor, f"t{i}", f"message {i} about topic{i}")
    assert actor.state.summary.version >= 2 and "topic2" in actor.state.summary.text
    assert "vaultcode8842" not in actor.state.summary.text
    assert not actor.state.forgotten  # pruned once its messages are gone
    await actor.close()


async def test_summary_survives_snapshot_and_crash() -> None:
    journal = InMemoryJournal()
    actor = await activate(journal)
    for i in range(1, 8):
        await run(actor, f"t{i}", f"message {i} about topic{i}")
    before = actor.state.summary
    # Snapshot round trip.
    assert SessionState.from_dict(actor.state.to_dict()).summary == before
    # Crash (no snapshot): the records carry the summary each prompt held, so a new activation has the one
    # the last turn used (the rewrite after the last turn is redone after the next turn).
    await actor.close()
    again = await activate(journal)
    assert again.state.summary.version >= before.version - 1 >= 1
    assert again.state.summary.text
    await again.close()


async def test_summary_is_written_after_the_turn_not_before_it() -> None:
    release = asyncio.Event()

    class SlowSummarizer(ExtractiveSummarizer):
        async def summarize(
            self, previous: str, messages: Sequence[Message], *, max_tokens: int, provider: str = "", model: str = ""
        ) -> str:
            await release.wait()
            return await super().summarize(previous, messages, max_tokens=max_tokens)

    journal = InMemoryJournal()
    actor = await activate(journal, summarizer=SlowSummarizer())
    for i in range(1, 6):
        done = asyncio.Event()

        async def on_done(done: asyncio.Event = done) -> None:
            done.set()

        await actor.submit(local(Turn(f"t{i}", f"message {i}"), EventLog(), on_done))
        # Turns complete while the rewrite waits: summarising is off the turn's path.
        await asyncio.wait_for(done.wait(), 5)
    assert actor.state.summary.version == 0
    release.set()
    await wait_for(lambda: actor.state.summary.version == 1, what="the summary rewrite")
    await actor.close()


async def test_close_cancels_a_running_rewrite() -> None:
    never = asyncio.Event()

    class StuckSummarizer(ExtractiveSummarizer):
        async def summarize(
            self, previous: str, messages: Sequence[Message], *, max_tokens: int, provider: str = "", model: str = ""
        ) -> str:
            await never.wait()
            return ""

    journal = InMemoryJournal()
    actor = await activate(journal, summarizer=StuckSummarizer())
    for i in range(1, 6):
        done = asyncio.Event()

        async def on_done(done: asyncio.Event = done) -> None:
            done.set()

        await actor.submit(local(Turn(f"t{i}", f"message {i}"), EventLog(), on_done))
        await asyncio.wait_for(done.wait(), 5)
    task = actor._summary.task
    assert task is not None and not task.done()
    await asyncio.wait_for(actor.close(), 5)
    assert task.done()


class _Model:
    name = "anthropic"

    def __init__(self, answer: str, provider: str = "anthropic", fail: bool = False) -> None:
        self.answer, self.provider, self.fail = answer, provider, fail
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("down")
        yield TextDelta(self.answer)
        yield ModelResult(provider=self.provider)

    async def aclose(self) -> None:
        return None


async def test_model_summarizer_asks_the_model_with_a_summarising_prompt() -> None:
    model = _Model("The user likes tea.")
    text = await ModelSummarizer(model).summarize(
        "", [Message("user", "I like tea", "t1", 1)], max_tokens=100, provider="anthropic", model="claude-x"
    )
    assert text == "The user likes tea."
    assert (model.requests[0].provider, model.requests[0].model) == ("anthropic", "claude-x")
    assert "summary" in model.requests[0].system.lower()
    assert "I like tea" in model.requests[0].messages[0].text


async def test_model_summarizer_falls_back_to_extractive() -> None:
    messages = [Message("user", "I like tea", "t1", 1)]
    for model in (_Model("x", fail=True), _Model("I am the offline responder", provider="offline")):
        text = await ModelSummarizer(model).summarize("", messages, max_tokens=100)
        assert text == extractive_summary("", messages, max_tokens=100)


def test_non_models_summarize_extractively() -> None:
    assert isinstance(summarizer_for(OfflineProvider()), ExtractiveSummarizer)
    assert isinstance(summarizer_for(ScriptedProvider()), ExtractiveSummarizer)
    assert isinstance(summarizer_for(_Model("x")), ModelSummarizer)


def test_summary_round_trip() -> None:
    summary = Summary("text", 3, 7)
    assert Summary.from_dict(summary.to_dict()) == summary
    assert Summary.from_dict(None) == Summary()
