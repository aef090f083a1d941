"""Context assembly: summary, retrieved passages (knowledge and long-term memory outside the window) and window
in the prompt; citations before the first token; the record of exactly what entered the prompt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from unit_support import EventLog, from_protos, kind, local

from salon import otel
from salon.actors import prompt as prompt_module
from salon.actors.context import PASSAGES_HEADING, TurnContext, explain, within_budget
from salon.actors.model import Message, ModelChunk, ModelRequest
from salon.actors.session import (
    SessionActor,
    SessionKey,
    SessionSettings,
    SessionState,
    Turn,
)
from salon.actors.summary import Summary
from salon.otel import attributes as attrs
from salon.providers import OfflineProvider, ScriptedProvider
from salon.providers.offline import offline_answer
from salon.storage import Passage, RetrievalQuery
from salon.storage.inmemory import InMemoryJournal, InMemoryRetriever
from salon.v1 import turn_pb2

KEY = SessionKey("acme", "s1")
INCARNATION = "1"


class RecordingProvider(ScriptedProvider):
    """The scripted provider, keeping every request it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        async for chunk in super().stream(request):
            yield chunk


def knowledge(doc: str, n: int, text: str, title: str = "") -> Passage:
    return Passage("knowledge", doc, f"{doc}#{n}", text, 0.0, 0, title=title)


def memory(session_id: str, turn_id: str, index: int, text: str) -> Passage:
    return Passage("memory", session_id, turn_id, text, 0.0, 0, turn_index=index)


class Rig:
    def __init__(self, retriever: Any, settings: SessionSettings | None = None, key: SessionKey = KEY) -> None:
        self.retriever = retriever
        self.settings = settings or SessionSettings(window_max_messages=4, summary_min_messages=1000)
        self.provider = RecordingProvider(tokens=3)
        self.journal = InMemoryJournal()
        self.key = key
        self.log = EventLog()

    async def activate(self) -> SessionActor:
        loaded, ledger = await self.journal.open(self.key.tenant_id, self.key.session_id, INCARNATION, "h")
        state = SessionState.restore(loaded, INCARNATION, self.settings.window_max_messages)
        return SessionActor(self.key, self.settings, state, self.provider, ledger, retriever=self.retriever)

    async def run(self, actor: SessionActor, turn_id: str, text: str) -> list[turn_pb2.TurnEvent]:
        done = asyncio.Event()

        async def on_done() -> None:
            done.set()

        await actor.submit(local(Turn(turn_id, text), self.log, on_done))
        await asyncio.wait_for(done.wait(), 5)
        return self.log.of(turn_id)

    def context(self, turn_id: str) -> TurnContext:
        entries = self.journal.turns[(self.key.tenant_id, self.key.session_id)]
        record = next(r for r in entries if r is not None and r.turn_id == turn_id)
        return TurnContext.from_json(record.context_json)


async def test_citations_come_before_the_first_token_and_name_the_passages_in_the_prompt() -> None:
    retriever = InMemoryRetriever()
    retriever.add(knowledge("handbook", 0, "The office wifi password is heliotrope.", "Handbook"), "acme")
    retriever.add(knowledge("menu", 0, "Lunch is served at noon on weekdays."), "acme")
    rig = Rig(retriever, SessionSettings(retrieval_top_k=1, summary_min_messages=1000))
    actor = await rig.activate()
    events = await rig.run(actor, "t1", "what is the wifi password")
    kinds = [kind(e) for e in events]
    assert kinds[:3] == ["accepted", "citations", "delta"]
    cited = events[1].citations.citations
    assert [(c.source, c.document_id, c.chunk_id, c.title) for c in cited] == [
        ("knowledge", "handbook", "handbook#0", "Handbook")
    ]
    assert cited[0].score > 0
    request = rig.provider.requests[-1]
    assert PASSAGES_HEADING in request.system
    assert "[1] (document Handbook) The office wifi password is heliotrope." in request.system
    assert "\n[2]" not in request.system  # top_k 1: one passage
    context = rig.context("t1")
    assert [(p.document_id, p.chunk_id) for p in context.passages] == [("handbook", "handbook#0")]
    assert context.passages[0].tokens > 0 and context.total_tokens >= context.passages[0].tokens
    await actor.close()


async def test_memories_in_the_window_are_not_retrieved_and_the_record_lists_the_window() -> None:
    retriever = InMemoryRetriever()
    rig = Rig(retriever, SessionSettings(window_max_messages=5, summary_min_messages=1000))
    actor = await rig.activate()
    for i in range(1, 5):
        await rig.run(actor, f"t{i}", f"note {i}: the code word is zebra{i}")
        # What the storage side's writer does for each completed turn.
        retriever.add(memory("s1", f"t{i}", i, f"note {i}: the code word is zebra{i}"), "acme", "s1")
    events = await rig.run(actor, "t5", "what was the code word zebra")
    context = rig.context("t5")
    # The window holds the last two turns (4 messages + the new one); their memories are excluded.
    assert [(w.turn_id, w.role) for w in context.window] == [
        ("t3", "user"),
        ("t3", "assistant"),
        ("t4", "user"),
        ("t4", "assistant"),
    ]
    assert all(w.tokens > 0 for w in context.window)
    memories = [p for p in context.passages if p.source == "memory"]
    assert {p.chunk_id for p in memories} <= {"t1", "t2"} and memories
    assert {p.turn_index for p in memories} <= {1, 2}
    cited = next(e for e in events if kind(e) == "citations").citations.citations
    assert [c.chunk_id for c in cited] == [p.chunk_id for p in context.passages]
    await actor.close()


async def test_memory_disabled_retrieves_knowledge_only() -> None:
    retriever = InMemoryRetriever()
    retriever.add(memory("s1", "old", 1, "the code word is zebra"), "acme", "s1")
    retriever.add(knowledge("doc", 0, "zebra crossings are striped"), "acme")
    rig = Rig(retriever, SessionSettings(long_term_memory=False, summary_min_messages=1000))
    actor = await rig.activate()
    await rig.run(actor, "t1", "zebra")
    assert {p.source for p in rig.context("t1").passages} == {"knowledge"}
    await actor.close()


async def test_tenants_and_sessions_never_see_each_others_passages() -> None:
    retriever = InMemoryRetriever()
    retriever.add(knowledge("secret", 0, "tenant B's launch date is March"), "tenant_b")
    retriever.add(memory("s1", "bt1", 1, "tenant B's launch date is March"), "tenant_b", "s1")
    retriever.add(memory("other", "at1", 1, "the launch date is March"), "acme", "other")
    rig = Rig(retriever)
    actor = await rig.activate()
    events = await rig.run(actor, "t1", "when is the launch date March")
    assert not any(kind(e) == "citations" for e in events)
    assert rig.context("t1").passages == ()
    await actor.close()


class FailingRetriever:
    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        raise RuntimeError("lancedb is gone")


async def test_a_failing_retriever_degrades_the_turn_instead_of_failing_it() -> None:
    rig = Rig(FailingRetriever())
    actor = await rig.activate()
    events = await rig.run(actor, "t1", "hello there")
    assert kind(events[-1]) == "completed"
    assert not any(kind(e) == "citations" for e in events)
    assert rig.context("t1").retrieval_error_reason == "RETRIEVAL_FAILED"
    await actor.close()


class OpeningRetriever(InMemoryRetriever):
    """A retriever whose tables are still opening (as a host's are right after it reports ready): it answers only
    once the test lets the opening finish."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.asked = asyncio.Event()
        self.finish = asyncio.Event()

    async def ready(self) -> None:
        self.asked.set()
        await self.finish.wait()
        self.opened = True

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        if not self.opened:
            raise RuntimeError("the tables are not open yet")
        return await super().retrieve(query)


async def test_a_turn_waits_for_the_tables_still_opening_and_retrieves() -> None:
    retriever = OpeningRetriever()
    retriever.add(knowledge("handbook", 0, "The office wifi password is heliotrope.", "Handbook"), "acme")
    rig = Rig(retriever, SessionSettings(retrieval_top_k=1, summary_min_messages=1000))
    actor = await rig.activate()
    turn = asyncio.create_task(rig.run(actor, "t1", "what is the wifi password"))
    await asyncio.wait_for(retriever.asked.wait(), 5)
    assert not turn.done()
    retriever.finish.set()
    events = await turn
    assert [kind(e) for e in events][:3] == ["accepted", "citations", "delta"]
    assert [c.document_id for c in events[1].citations.citations] == ["handbook"]
    assert rig.context("t1").retrieval_error_reason == ""
    await actor.close()


class Model:
    def __init__(self) -> None:
        self.loaded = False


class LoadingModelRetriever(InMemoryRetriever):
    """A retriever whose first query waits for its embedding model to load (as a host's first query that needs a
    vector does): it answers only once the test lets the load finish."""

    def __init__(self) -> None:
        super().__init__()
        self.embedder = Model()
        self.asked = asyncio.Event()
        self.finish = asyncio.Event()

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        self.asked.set()
        await self.finish.wait()
        self.embedder.loaded = True
        return await super().retrieve(query)


@pytest.mark.parametrize("model_loaded", [False, True])
async def test_a_query_waiting_for_the_embedding_model_is_not_held_to_the_query_limit(
    model_loaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prompt_module, "RETRIEVAL_TIMEOUT_S", 0.0)  # any wait at all outlasts the query limit
    retriever = LoadingModelRetriever()
    retriever.embedder.loaded = model_loaded
    retriever.add(knowledge("handbook", 0, "The office wifi password is heliotrope.", "Handbook"), "acme")
    rig = Rig(retriever, SessionSettings(retrieval_top_k=1, summary_min_messages=1000))
    actor = await rig.activate()
    turn = asyncio.create_task(rig.run(actor, "t1", "what is the wifi password"))
    if model_loaded:
        # A loaded model leaves the query its own limit: the turn goes on without passages.
        events = await turn
        assert rig.context("t1").retrieval_error_reason == "RETRIEVAL_TIMEOUT"
        assert not any(kind(e) == "citations" for e in events)
    else:
        await asyncio.wait_for(retriever.asked.wait(), 5)
        retriever.finish.set()
        events = await turn
        assert [kind(e) for e in events][:2] == ["accepted", "citations"]
        assert rig.context("t1").retrieval_error_reason == ""
    await actor.close()


async def test_a_replayed_turn_sends_the_same_citations_with_the_same_numbers() -> None:
    retriever = InMemoryRetriever()
    retriever.add(knowledge("doc", 0, "alpha beta gamma"), "acme")
    rig = Rig(retriever)
    actor = await rig.activate()
    first = await rig.run(actor, "t1", "alpha")
    replay_log = EventLog()
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    await actor.submit(local(Turn("t1", "alpha"), replay_log, on_done))
    await asyncio.wait_for(done.wait(), 5)
    replayed = replay_log.of("t1")
    assert [(e.seq, kind(e)) for e in replayed] == [(e.seq, kind(e)) for e in first]
    assert replayed[1].citations == first[1].citations
    assert rig.provider.calls == 1
    await actor.close()


def test_explain_counts_tokens_and_the_context_round_trips() -> None:
    window = [Message("user", "x" * 40, "t1", 1), Message("assistant", "y" * 8, "t1", 1)]
    passages = [knowledge("d", 0, "z" * 20, "D")]
    system, context = explain(
        instructions="be brief",
        summary=Summary("earlier: things", 2, 1),
        passages=passages,
        window=window,
        user_text="q" * 12,
    )
    assert system.startswith("be brief")
    assert "earlier: things" in system and "[1] (document D)" in system
    assert [w.tokens for w in context.window] == [10, 2]
    assert context.message_tokens == 3 and context.summary.version == 2 and context.summary_tokens == 4
    assert context.total_tokens > sum(w.tokens for w in context.window) + context.message_tokens
    assert TurnContext.from_json(context.to_json()) == context
    assert TurnContext.from_json("not json") == TurnContext()


def test_the_offline_responder_answers_from_the_passages_and_says_so() -> None:
    request = ModelRequest(
        system="ignored",
        messages=(Message("user", "what is the wifi password"),),
        instructions="",
        passages=(knowledge("handbook", 0, "The office wifi password is heliotrope."),),
    )
    answer = offline_answer(request)
    assert "offline responder" in answer
    assert "[1] “The office wifi password is heliotrope.”" in answer
    assert OfflineProvider().name == "offline"


async def test_a_turn_continued_after_a_dead_host_keeps_the_citations_it_already_sent() -> None:
    retriever = InMemoryRetriever()
    retriever.add(knowledge("doc", 0, "alpha beta gamma"), "acme")
    retriever.add(knowledge("other", 0, "alpha delta"), "acme")
    rig = Rig(retriever)
    actor = await rig.activate()
    # The dead host had sent: accepted, citations naming only other#0, one token.
    sent_citation = turn_pb2.Citation(source="knowledge", document_id="other", chunk_id="other#0", score=0.5)
    prior = [
        turn_pb2.TurnEvent(session_id="s1", turn_id="t1", seq=1, accepted=turn_pb2.TurnAccepted()),
        turn_pb2.TurnEvent(
            session_id="s1", turn_id="t1", seq=2, citations=turn_pb2.Citations(citations=[sent_citation])
        ),
        turn_pb2.TurnEvent(session_id="s1", turn_id="t1", seq=3, delta=turn_pb2.TokenDelta(text="alpha ")),
    ]
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    await actor.submit(local(Turn("t1", "alpha", prior_events=from_protos(prior)), rig.log, on_done))
    await asyncio.wait_for(done.wait(), 5)
    continued = rig.log.of("t1")
    assert continued[0].seq == 4 and not any(kind(e) == "citations" for e in continued)
    # The prompt kept to the passage the client was told about, and the record names exactly it.
    assert [p.chunk_id for p in rig.provider.requests[-1].passages] == ["other#0"]
    assert [p.chunk_id for p in rig.context("t1").passages] == ["other#0"]
    # A later replay sends what the client saw first: the same citations at the same sequence number.
    replay_log = EventLog()
    done.clear()
    await actor.submit(local(Turn("t1", "alpha"), replay_log, on_done))
    await asyncio.wait_for(done.wait(), 5)
    replayed = replay_log.of("t1")
    assert (replayed[1].seq, [c.chunk_id for c in replayed[1].citations.citations]) == (2, ["other#0"])
    await actor.close()


async def test_a_turn_continued_after_tokens_without_citations_gets_no_late_citations() -> None:
    retriever = InMemoryRetriever()
    retriever.add(knowledge("doc", 0, "alpha beta gamma"), "acme")
    rig = Rig(retriever)
    actor = await rig.activate()
    prior = [
        turn_pb2.TurnEvent(session_id="s1", turn_id="t1", seq=1, accepted=turn_pb2.TurnAccepted()),
        turn_pb2.TurnEvent(session_id="s1", turn_id="t1", seq=2, delta=turn_pb2.TokenDelta(text="alpha ")),
    ]
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    await actor.submit(local(Turn("t1", "alpha", prior_events=from_protos(prior)), rig.log, on_done))
    await asyncio.wait_for(done.wait(), 5)
    assert not any(kind(e) == "citations" for e in rig.log.of("t1"))
    assert rig.context("t1").passages == ()
    await actor.close()


async def test_retrieval_has_its_span_inside_context_assembly_with_counts_and_no_content() -> None:
    exporter = InMemorySpanExporter()
    otel.setup(otel.TelemetrySettings(), exporter=exporter)
    try:
        retriever = InMemoryRetriever()
        retriever.add(knowledge("doc", 0, "secret-canary-5521 alpha"), "acme")
        rig = Rig(retriever)
        actor = await rig.activate()
        await rig.run(actor, "t1", "alpha")
        await actor.close()
        spans = {s.name: s for s in exporter.get_finished_spans()}
    finally:
        otel.shutdown()
    retrieval, assembly = spans[attrs.SPAN_RETRIEVAL], spans[attrs.SPAN_CONTEXT]
    assert retrieval.parent is not None and assembly.context is not None
    assert retrieval.parent.span_id == assembly.context.span_id
    assert retrieval.attributes is not None and assembly.attributes is not None
    assert (retrieval.attributes[attrs.RETRIEVAL_PASSAGES], retrieval.attributes[attrs.RETRIEVAL_CHUNKS]) == (1, 1)
    assert assembly.attributes[attrs.CONTEXT_PROMPT_TOKENS] > 0
    assert not any("secret-canary" in str(dict(s.attributes or {})) for s in spans.values())


def test_within_budget_keeps_passages_best_first_while_they_fit() -> None:
    long, short, shorter = "word " * 50, "word " * 10, "word " * 5
    passages = [knowledge("a", 0, short), knowledge("b", 0, long), knowledge("c", 0, shorter)]

    def words(text: str) -> int:
        return len(text.split())

    # The long one does not fit after the first; the next, shorter one still enters, in its order.
    assert [p.document_id for p in within_budget(passages, 15, words)] == ["a", "c"]
    assert [p.document_id for p in within_budget(passages, 65, words)] == ["a", "b", "c"]
    assert within_budget(passages, 4, words) == []


async def test_a_session_token_budget_bounds_the_passages_in_the_prompt() -> None:
    retriever = InMemoryRetriever()
    for n in range(3):
        retriever.add(knowledge("handbook", n, f"The wifi password {n} is " + "heliotrope " * 40), "acme")
    retriever.add(knowledge("short", 0, "The wifi password is short."), "acme")
    settings = SessionSettings(retrieval_top_k=10, retrieval_token_budget=120, summary_min_messages=1000)
    rig = Rig(retriever, settings)
    actor = await rig.activate()
    events = await rig.run(actor, "t1", "what is the wifi password")
    context = rig.context("t1")
    # Without a tokenizer loaded the passages are counted as characters / 4; their total keeps to the budget.
    assert sum(p.tokens for p in context.passages) <= 120
    assert 1 <= len(context.passages) < 4
    cited = [c.chunk_id for e in events if kind(e) == "citations" for c in e.citations.citations]
    assert cited == [p.chunk_id for p in context.passages]
    await actor.close()
