"""The real anthropic SDK (and the OpenAI-compatible client) against local servers speaking their streaming
protocols, scripted per test; and one turn through the whole engine to the real SDK.

Retries never really wait: the chains get a sleep that records the delay and returns, so "honours retry-after"
is asserted on the recorded delay. Waits for the servers' side use deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from conftest import EngineFactory, assert_well_formed, collect_turn, create_session, reply_text, wait_for

from salon.actors.model import Message, ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta
from salon.providers import OfflineProvider, errors
from salon.providers.anthropic import AnthropicProvider
from salon.providers.fake_servers import FakeAnthropicServer, FakeModelServer, FakeOpenAIServer, Recorded, Reply
from salon.providers.openai_compatible import OpenAICompatibleProvider
from salon.providers.pricing import PriceTable
from salon.providers.resilience import ProviderChain, RetryPolicy
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

PRICES = "claude-test=3/15/0.3/3.75; claude-session=1/5; local-llama=0.1/0.2"
MODEL = "claude-test"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropicServer]:
    server = FakeAnthropicServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    await server.start()
    yield server
    await server.close()


def _anthropic(server: FakeModelServer, idle_timeout_s: float = 10.0) -> AnthropicProvider:
    return AnthropicProvider(
        model=MODEL,
        api_key="test-key",
        base_url=server.url,
        idle_timeout_s=idle_timeout_s,
        connect_timeout_s=5.0,
        prices=PriceTable.parse(PRICES),
    )


def _openai(server: FakeModelServer, idle_timeout_s: float = 10.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url=server.url + "/v1",
        model="local-llama",
        api_key="local-key",
        idle_timeout_s=idle_timeout_s,
        prices=PriceTable.parse(PRICES),
    )


class Rig:
    """A chain over real providers, with recorded (not waited) retry delays and a clock the test moves."""

    def __init__(self, providers: dict[str, ModelProvider], **options: Any) -> None:
        self.clock = Clock()
        self.delays: list[float] = []

        async def sleep(delay: float) -> None:
            self.delays.append(delay)
            self.clock.now += delay

        retry = RetryPolicy(max_attempts=3, base_delay_s=0.2, max_delay_s=2.0, max_retry_after_s=30.0)
        self.chain = ProviderChain(providers, list(providers), retry=retry, clock=self.clock, sleep=sleep, **options)

    async def close(self) -> None:
        await self.chain.aclose()


@pytest.fixture
async def rigs() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(*providers: ModelProvider, **options: Any) -> Rig:
        made.append(Rig({p.name: p for p in providers}, **options))
        return made[-1]

    yield make
    for rig in made:
        await rig.close()


def _request(text: str = "hello there", **fields: Any) -> ModelRequest:
    return ModelRequest(system="You are terse.", messages=(Message("user", text),), **fields)


async def _run(stream: AsyncIterator[ModelChunk]) -> tuple[list[str], ModelResult | None, ModelError | None]:
    texts: list[str] = []
    result: ModelResult | None = None
    try:
        async for chunk in stream:
            if isinstance(chunk, TextDelta):
                texts.append(chunk.text)
            else:
                result = chunk
    except ModelError as exc:
        return texts, result, exc
    return texts, result, None


async def _disconnected(recorded: Recorded) -> None:
    """Wait (with a deadline) until the server saw the client hang up."""
    await asyncio.wait_for(recorded.disconnected.wait(), timeout=10)


# Anthropic: the happy path


async def test_tokens_stream_as_they_are_generated_with_usage_cost_and_stop_reason(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(
        Reply(
            tokens=["The ", "answer ", "is ", "42"],
            gate_after=2,
            stop_reason="stop_sequence",
            stop_sequence="END",
            input_tokens=120,
            output_tokens=5,
            cache_read_input_tokens=2000,
            cache_creation_input_tokens=300,
            ping_every=1,
        )
    )
    rig = rigs(_anthropic(anthropic_server))
    stream = rig.chain.stream(_request(temperature=0.4, stop_sequences=("END",), max_tokens=64))
    first = [await anext(stream), await anext(stream)]
    # Two tokens arrived while the server still holds the rest: they are streamed, not buffered.
    assert first == [TextDelta("The "), TextDelta("answer ")]
    assert not anthropic_server.requests[0].finished
    anthropic_server.release()
    texts, result, error = await _run(stream)
    assert error is None and texts == ["is ", "42"]
    assert result is not None
    assert (result.provider, result.model, result.stop_reason, result.stop_sequence) == (
        "anthropic",
        MODEL,
        "stop_sequence",
        "END",
    )
    assert (result.input_tokens, result.output_tokens) == (120, 5)
    assert (result.cache_read_input_tokens, result.cache_creation_input_tokens) == (2000, 300)
    assert result.estimated_cost_usd == pytest.approx((120 * 3 + 5 * 15 + 2000 * 0.3 + 300 * 3.75) / 1e6)

    [sent] = anthropic_server.requests
    assert sent.path == "/v1/messages"
    assert "test-key" in (sent.headers.get("x-api-key", "") + sent.headers.get("authorization", ""))
    assert sent.body["stream"] is True
    assert (sent.body["model"], sent.body["max_tokens"]) == (MODEL, 64)
    assert "temperature" not in sent.body  # rejected by the API version the SDK speaks
    assert sent.body["stop_sequences"] == ["END"]
    assert sent.body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    assert sent.body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert rig.chain.breaker_states()["anthropic"] == "closed"


async def test_a_prefilled_answer_continues_without_repeating_text(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply(tokens=[" world", "!"]))
    rig = rigs(_anthropic(anthropic_server))
    texts, result, _ = await _run(rig.chain.stream(_request(prefill="Hello ")))
    assert result is not None
    assert "Hello " + "".join(texts) == "Hello world!"
    last = anthropic_server.requests[0].body["messages"][-1]
    assert last == {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}


# Anthropic: failures before the first token are retried


async def test_429_is_retried_after_its_retry_after(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply.error(429, "rate_limit_error", retry_after="3"))
    rig = rigs(_anthropic(anthropic_server))
    texts, result, error = await _run(rig.chain.stream(_request("alpha beta")))
    assert error is None and result is not None
    assert "".join(texts) == "alpha beta " * 4
    assert len(anthropic_server.requests) == 2
    assert len(rig.delays) == 1 and rig.delays[0] >= 3


@pytest.mark.parametrize(("status", "error_type"), [(529, "overloaded_error"), (500, "api_error"), (503, "api_error")])
async def test_overloaded_and_server_errors_are_retried_with_backoff(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig], status: int, error_type: str
) -> None:
    anthropic_server.push(Reply.error(status, error_type), Reply.error(status, error_type))
    rig = rigs(_anthropic(anthropic_server))
    texts, result, error = await _run(rig.chain.stream(_request("one")))
    assert error is None and result is not None and result.provider == "anthropic"
    assert texts == ["one "] * 8  # once, in full
    assert len(anthropic_server.requests) == 3
    assert len(rig.delays) == 2 and 0.1 <= rig.delays[0] <= 0.2 and 0.2 <= rig.delays[1] <= 0.4


async def test_retries_give_up_after_the_attempts_and_report_the_error(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(*[Reply.error(529, "overloaded_error")] * 3)
    rig = rigs(_anthropic(anthropic_server))
    texts, _, error = await _run(rig.chain.stream(_request()))
    assert texts == []
    assert error is not None and (error.reason, error.retryable) == (errors.OVERLOADED, True)
    assert len(anthropic_server.requests) == 3


async def test_a_spend_limit_429_is_not_retried_and_the_chain_falls_back(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply.error(429, "rate_limit_error"))  # no retry-after: a spend limit
    rig = rigs(_anthropic(anthropic_server), OfflineProvider(token_delay_s=0))
    texts, result, error = await _run(rig.chain.stream(_request()))
    assert error is None and result is not None
    assert result.provider == "offline" and result.extra["fallback_from"] == "anthropic"
    assert "".join(texts).startswith("I am Salon's offline responder")
    assert len(anthropic_server.requests) == 1 and rig.delays == []


async def test_a_connection_dropped_before_the_first_token_is_retried(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply(drop_after=0))
    rig = rigs(_anthropic(anthropic_server))
    texts, result, error = await _run(rig.chain.stream(_request("x")))
    assert error is None and result is not None and texts == ["x "] * 8
    assert len(anthropic_server.requests) == 2


async def test_a_stall_before_the_first_token_hits_the_idle_timeout_and_is_retried(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply(stall_after=0))
    rig = rigs(_anthropic(anthropic_server, idle_timeout_s=0.3))
    texts, result, error = await _run(rig.chain.stream(_request("y")))
    assert error is None and result is not None and texts == ["y "] * 8
    assert len(anthropic_server.requests) == 2
    await _disconnected(anthropic_server.requests[0])  # the stalled stream was closed, not left open


# Anthropic: failures after the first token end the turn as partial, never resent


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(tokens=["a ", "b ", "c ", "d "], error_after=2, error_type="overloaded_error"), errors.OVERLOADED),
        (Reply(tokens=["a ", "b ", "c ", "d "], error_after=2, error_type="api_error"), errors.UNAVAILABLE),
        (Reply(tokens=["a ", "b ", "c ", "d "], drop_after=2), errors.UNAVAILABLE),
        (Reply(tokens=["a ", "b ", "c ", "d "], stall_after=2), errors.STALLED),
    ],
    ids=["error-event-overloaded", "error-event-api", "dropped", "stalled"],
)
async def test_a_failure_after_k_tokens_is_partial_and_not_retried(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig], reply: Reply, reason: str
) -> None:
    anthropic_server.push(reply)
    rig = rigs(_anthropic(anthropic_server, idle_timeout_s=0.3), OfflineProvider(token_delay_s=0))
    texts, result, error = await _run(rig.chain.stream(_request()))
    assert texts == ["a ", "b "]
    assert result is None
    assert error is not None and (error.reason, error.retryable) == (reason, False)
    assert len(anthropic_server.requests) == 1  # no retry, no fallback: nothing is ever sent twice
    assert rig.chain.counters["offline"].attempts == 0
    assert rig.chain.counters["anthropic"].failures == 1


async def test_slow_tokens_with_pings_complete(anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]) -> None:
    anthropic_server.push(Reply(tokens=[f"t{i} " for i in range(5)], token_delay_s=0.02, ping_every=1))
    rig = rigs(_anthropic(anthropic_server, idle_timeout_s=5))
    texts, result, error = await _run(rig.chain.stream(_request()))
    assert error is None and result is not None
    assert texts == [f"t{i} " for i in range(5)]


# Cancellation closes the upstream stream


async def test_closing_the_stream_closes_the_upstream_connection(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply(tokens=["a ", "b ", "c "], gate_after=1))
    rig = rigs(_anthropic(anthropic_server))
    stream = rig.chain.stream(_request())
    assert await anext(stream) == TextDelta("a ")
    await stream.aclose()  # type: ignore[attr-defined]
    await _disconnected(anthropic_server.requests[0])
    assert not anthropic_server.requests[0].finished
    assert rig.chain.breaker_states()["anthropic"] == "closed"


async def test_cancelling_the_turn_task_closes_the_upstream_connection(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(Reply(tokens=["a ", "b "], gate_after=1))
    rig = rigs(_anthropic(anthropic_server))
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in rig.chain.stream(_request()):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _disconnected(anthropic_server.requests[0])


# The circuit breaker and the fallback chain, against the real SDK


async def test_breaker_opens_skips_to_the_fallback_then_probes_and_closes(
    anthropic_server: FakeAnthropicServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(*[Reply.error(500, "api_error")] * 3)
    rig = rigs(_anthropic(anthropic_server), OfflineProvider(token_delay_s=0), failure_threshold=3, cooldown_s=30)
    _, result, _ = await _run(rig.chain.stream(_request()))
    assert result is not None and result.provider == "offline"
    assert rig.chain.breaker_states()["anthropic"] == "open"
    assert rig.chain.stats()["anthropic_breaker"] == 2

    for _ in range(2):  # while open, no request reaches the provider
        _, result, _ = await _run(rig.chain.stream(_request()))
        assert result is not None and result.provider == "offline"
    assert len(anthropic_server.requests) == 3

    rig.clock.now += 31
    assert rig.chain.breaker_states()["anthropic"] == "half_open"
    texts, result, _ = await _run(rig.chain.stream(_request("probe")))  # the probe: the server answers again
    assert result is not None and result.provider == "anthropic" and texts == ["probe "] * 8
    assert len(anthropic_server.requests) == 4
    assert rig.chain.breaker_states()["anthropic"] == "closed"
    assert list(rig.chain.breakers["anthropic"].transitions) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert rig.chain.counters["offline"].fallbacks == 3


async def test_anthropic_failing_falls_back_to_the_openai_compatible_server(
    anthropic_server: FakeAnthropicServer, openai_server: FakeOpenAIServer, rigs: Callable[..., Rig]
) -> None:
    anthropic_server.push(*[Reply.error(529, "overloaded_error")] * 3)
    rig = rigs(_anthropic(anthropic_server), _openai(openai_server), OfflineProvider(token_delay_s=0))
    texts, result, error = await _run(rig.chain.stream(_request("local", model=MODEL)))
    assert error is None and result is not None
    assert (result.provider, result.model) == ("openai_compatible", "local-llama")
    assert texts == ["local "] * 8
    assert len(anthropic_server.requests) == 3 and len(openai_server.requests) == 1
    assert openai_server.requests[0].body["model"] == "local-llama"  # the session's model was Anthropic's


# OpenAI-compatible server


async def test_openai_compatible_streams_with_usage(openai_server: FakeOpenAIServer, rigs: Callable[..., Rig]) -> None:
    openai_server.push(
        Reply(tokens=["Hi", " there"], gate_after=1, stop_sequence="END", input_tokens=30, cache_read_input_tokens=10)
    )
    rig = rigs(_openai(openai_server))
    stream = rig.chain.stream(_request(stop_sequences=("END",), temperature=0.7))
    assert await anext(stream) == TextDelta("Hi")
    assert not openai_server.requests[0].finished
    openai_server.release()
    texts, result, error = await _run(stream)
    assert error is None and texts == [" there"] and result is not None
    assert (result.provider, result.model, result.stop_reason, result.stop_sequence) == (
        "openai_compatible",
        "local-llama",
        "stop_sequence",
        "END",
    )
    assert (result.input_tokens, result.cache_read_input_tokens, result.output_tokens) == (30, 10, 2)
    sent = openai_server.requests[0]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == "Bearer local-key"
    assert sent.body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert (sent.body["stop"], sent.body["temperature"], sent.body["stream"]) == (["END"], 0.7, True)


async def test_openai_compatible_retries_before_the_first_token(
    openai_server: FakeOpenAIServer, rigs: Callable[..., Rig]
) -> None:
    openai_server.push(Reply.error(503, "server_error"), Reply.error(429, "rate_limit_error", retry_after="2"))
    rig = rigs(_openai(openai_server))
    texts, result, error = await _run(rig.chain.stream(_request("z")))
    assert error is None and result is not None and texts == ["z "] * 8
    assert len(openai_server.requests) == 3
    assert rig.delays[1] >= 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(tokens=["a ", "b ", "c "], error_after=2, error_type="server_error"), errors.UNAVAILABLE),
        (Reply(tokens=["a ", "b ", "c "], drop_after=2), errors.UNAVAILABLE),
        (Reply(tokens=["a ", "b ", "c "], stall_after=2), errors.STALLED),
    ],
    ids=["error-chunk", "dropped", "stalled"],
)
async def test_openai_compatible_failure_after_k_tokens_is_partial(
    openai_server: FakeOpenAIServer, rigs: Callable[..., Rig], reply: Reply, reason: str
) -> None:
    openai_server.push(reply)
    rig = rigs(_openai(openai_server, idle_timeout_s=0.3))
    texts, _, error = await _run(rig.chain.stream(_request()))
    assert texts == ["a ", "b "]
    assert error is not None and (error.reason, error.retryable) == (reason, False)
    assert len(openai_server.requests) == 1


async def test_openai_compatible_stall_before_the_first_token_is_retried(
    openai_server: FakeOpenAIServer, rigs: Callable[..., Rig]
) -> None:
    openai_server.push(Reply(stall_after=0))
    rig = rigs(_openai(openai_server, idle_timeout_s=0.3))
    _, result, error = await _run(rig.chain.stream(_request()))
    assert error is None and result is not None
    assert len(openai_server.requests) == 2


async def test_openai_compatible_cancel_closes_the_upstream_connection(
    openai_server: FakeOpenAIServer, rigs: Callable[..., Rig]
) -> None:
    openai_server.push(Reply(tokens=["a ", "b "], gate_after=1))
    rig = rigs(_openai(openai_server))
    stream = rig.chain.stream(_request())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await _disconnected(openai_server.requests[0])


async def test_an_unreachable_server_is_a_retryable_connection_error(rigs: Callable[..., Rig]) -> None:
    server = FakeOpenAIServer()
    await server.start()
    url = server.url
    await server.close()  # nothing listens there any more
    provider = OpenAICompatibleProvider(base_url=url + "/v1", model="m", connect_timeout_s=2)
    rig = rigs(provider)
    _, _, error = await _run(rig.chain.stream(_request()))
    assert error is not None and (error.reason, error.retryable) == (errors.UNAVAILABLE, True)
    assert len(rig.delays) == 2


# One turn through the whole engine: gRPC → NATS → host (Ray) → the real SDK → the local server


async def _history(
    engine: Any, stub: cs_grpc.ConversationServiceStub, session_id: str, count: int
) -> list[turn_pb2.TurnRecord]:
    turns: list[turn_pb2.TurnRecord] = []

    async def recorded() -> bool:
        nonlocal turns
        try:
            await asyncio.wait_for(engine.writer.flush(), 10)
        except Exception:
            return False
        page = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id, page_size=10))
        turns = list(page.turns)
        return len(turns) >= count

    await wait_for(recorded, timeout_s=60, what="the turns to reach the transcript")
    return turns


async def test_a_turn_through_the_engine_streams_from_the_real_sdk(
    make_engine: EngineFactory, anthropic_server: FakeAnthropicServer
) -> None:
    engine = await make_engine(
        model_provider="offline",
        model_chain="anthropic,offline",
        anthropic_api_key="test-key",
        anthropic_model=MODEL,
        anthropic_base_url=anthropic_server.url,
        model_prices=PRICES,
        model_backoff_base_s=0.01,
        model_backoff_max_s=0.02,
        num_hosts=1,
        num_shards=1,
    )
    anthropic_server.push(
        Reply.error(529, "overloaded_error"),  # retried inside the host, invisible to the client
        Reply(
            tokens=["Forty", "-two", " END"],
            stop_reason="stop_sequence",
            stop_sequence="END",
            input_tokens=50,
            cache_read_input_tokens=400,
        ),
        Reply(tokens=["half ", "an ", "answer "], error_after=2),
    )
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        settings = session_pb2.ModelSettings(model="claude-session", max_tokens=77, temperature=0.5)
        settings.stop_sequences.append("END")
        session_id = await create_session(stub, system_prompt="Answer with a number.", model=settings)

        # A deadline, not a timing claim: the turn must end rather than wait on a retry.
        events = await collect_turn(stub, session_id, "what is six times seven?", timeout=60)
        assert_well_formed(events, session_id)
        assert reply_text(events) == "Forty-two END"
        [usage] = [e.usage for e in events if e.HasField("usage")]
        assert (usage.provider, usage.model) == ("anthropic", "claude-session")
        assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (50, 3, 400)
        assert usage.estimated_cost_usd == pytest.approx((50 * 1 + 3 * 5 + 400 * 0.1) / 1e6)
        assert events[-1].completed.stop_reason == turn_pb2.STOP_REASON_STOP_SEQUENCE

        assert len(anthropic_server.requests) == 2
        sent = anthropic_server.requests[1].body
        assert (sent["model"], sent["max_tokens"]) == ("claude-session", 77)
        assert "temperature" not in sent
        assert sent["stop_sequences"] == ["END"]
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent["messages"][-1]["content"][0]["text"] == "what is six times seven?"

        # An error event after two tokens: the turn ends as partial, not retryable, text never repeated.
        events = await collect_turn(stub, session_id, "and again?")
        assert_well_formed(events, session_id)
        assert reply_text(events) == "half an "
        error = events[-1].error
        assert (error.partial, error.retryable, error.reason) == (True, False, errors.OVERLOADED)
        assert len(anthropic_server.requests) == 3

        first, second = await _history(engine, stub, session_id, 2)
        assert first.status == turn_pb2.TURN_STATUS_COMPLETED
        assert (first.usage.provider, first.usage.cache_read_input_tokens) == ("anthropic", 400)
        assert first.usage.estimated_cost_usd == pytest.approx(usage.estimated_cost_usd)
        assert (second.status, second.reply_text) == (turn_pb2.TURN_STATUS_PARTIAL, "half an ")
