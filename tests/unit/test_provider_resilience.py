"""Retries, circuit breakers and the fallback chain, with fake providers and a fake clock (no sockets)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from salon.actors.model import Message, ModelChunk, ModelError, ModelRequest, ModelResult, TextDelta
from salon.providers import errors
from salon.providers.resilience import CircuitBreaker, ProviderChain, RetryPolicy


class Clock:
    """A clock that moves only when told (or when the chain sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Plan:
    """One call's outcome: ``tokens`` streamed, then ``error`` (if any) instead of the result."""

    tokens: tuple[str, ...] = ("a ", "b ")
    error: ModelError | None = None
    hang: bool = False
    """Wait forever after the tokens (until closed or cancelled)."""
    result: bool = True


@dataclass
class FakeProvider:
    """Follows its plans in order (the last one repeats); records every request and every close."""

    name: str
    plans: list[Plan] = field(default_factory=lambda: [Plan()])
    requests: list[ModelRequest] = field(default_factory=list)
    closed: int = 0
    unexpected: Exception | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        plan = self.plans[min(len(self.requests), len(self.plans)) - 1]
        try:
            for token in plan.tokens:
                yield TextDelta(token)
            if self.unexpected is not None:
                raise self.unexpected
            if plan.hang:
                await asyncio.Event().wait()
            if plan.error is not None:
                raise plan.error
            if plan.result:
                yield ModelResult(stop_reason="end_turn", output_tokens=len(plan.tokens), model=request.model or "m")
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RoutedRequest(ModelRequest):
    """A request carrying the session's provider choice, as the session will send it."""

    provider: str = ""
    fallback_providers: tuple[str, ...] = ()


def request(**fields: object) -> ModelRequest:
    base = RoutedRequest(system="sys", messages=(Message("user", "hi"),))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def unavailable(retry_after_s: float | None = None) -> ModelError:
    return ModelError("down", reason=errors.UNAVAILABLE, retryable=True, retry_after_s=retry_after_s)


def chain(*providers: FakeProvider, clock: Clock | None = None, **kwargs: object) -> tuple[ProviderChain, list[float]]:
    """A chain over ``providers`` (in that order); returns it and the list of delays it slept."""
    clock = clock or Clock()
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        clock.now += delay

    options: dict[str, object] = {"retry": RetryPolicy(max_attempts=3, base_delay_s=0.1, max_delay_s=1.0)}
    options.update(kwargs)
    built = ProviderChain(
        {p.name: p for p in providers},
        [p.name for p in providers],
        clock=clock,
        sleep=sleep,
        rand=lambda: 0.5,
        **options,  # type: ignore[arg-type]
    )
    return built, delays


async def run(stream: AsyncIterator[ModelChunk]) -> tuple[list[str], ModelResult | None, ModelError | None]:
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


# RetryPolicy


def test_backoff_doubles_with_jitter_and_caps() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    for attempts, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 4.0)]:
        low = policy.delay_s(attempts, unavailable(), rand=lambda: 0.0)
        high = policy.delay_s(attempts, unavailable(), rand=lambda: 0.999999)
        assert low == pytest.approx(cap / 2)
        assert high == pytest.approx(cap, rel=1e-5)


def test_retry_after_is_honoured_with_a_little_jitter() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_retry_after_s=30)
    delay = policy.delay_s(1, unavailable(retry_after_s=7.0), rand=lambda: 0.5)
    assert delay is not None
    assert 7.0 <= delay <= 7.5


def test_no_retry_when_not_retryable_exhausted_or_asked_to_wait_too_long() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=10)
    assert policy.delay_s(1, ModelError("bad", reason=errors.INVALID_REQUEST)) is None
    assert policy.delay_s(3, unavailable()) is None
    assert policy.delay_s(1, unavailable(retry_after_s=60)) is None
    assert policy.delay_s(2, unavailable()) is not None


# CircuitBreaker


def state(breaker: CircuitBreaker) -> str:
    """The breaker's state, read afresh (a plain function, so type checkers do not narrow it between reads)."""
    return breaker.state


def test_breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.consecutive_failures == 2
    assert state(breaker) == "closed"
    breaker.record_success()
    assert breaker.consecutive_failures == 0  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    assert breaker.retry_in_s() == 10
    clock.now += 9.5
    assert state(breaker) == "open"
    assert breaker.retry_in_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert state(breaker) == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_success()
    assert state(breaker) == "closed"
    assert list(breaker.transitions) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert breaker.times_opened == 1


def test_a_failed_probe_opens_the_breaker_again_for_a_whole_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.retry_in_s() == 5
    assert breaker.times_opened == 2


def test_a_released_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert state(breaker) == "half_open"
    assert breaker.allow()


# ProviderChain


async def test_retries_before_the_first_token_then_answers_once() -> None:
    flaky = FakeProvider("anthropic", [Plan((), unavailable()), Plan((), unavailable()), Plan()])
    provider, delays = chain(flaky)
    texts, result, error = await run(provider.stream(request()))
    assert error is None
    assert texts == ["a ", "b "]
    assert result is not None
    assert (result.provider, result.extra["attempts"]) == ("anthropic", "3")
    assert len(flaky.requests) == 3
    assert delays == [pytest.approx(0.075), pytest.approx(0.15)]  # equal jitter at rand=0.5
    assert flaky.closed == 3
    assert provider.counters["anthropic"].retries == 2


async def test_retry_after_is_waited_for() -> None:
    limited = ModelError("slow down", reason=errors.RATE_LIMITED, retryable=True, retry_after_s=7)
    flaky = FakeProvider("anthropic", [Plan((), limited), Plan()])
    provider, delays = chain(flaky)
    _, result, error = await run(provider.stream(request()))
    assert error is None and result is not None
    assert delays[0] >= 7


async def test_an_error_after_the_first_token_ends_the_turn_without_retry_or_fallback() -> None:
    broken = FakeProvider("anthropic", [Plan(("a ", "b "), unavailable())])
    backup = FakeProvider("offline")
    provider, delays = chain(broken, backup)
    texts, result, error = await run(provider.stream(request()))
    assert texts == ["a ", "b "]  # sent once, never again
    assert result is None
    assert error is not None
    assert (error.reason, error.retryable) == (errors.UNAVAILABLE, False)
    assert len(broken.requests) == 1 and not backup.requests
    assert delays == []
    assert provider.counters["anthropic"].failures == 1


async def test_falls_back_when_retries_are_spent_and_says_who_answered() -> None:
    down = FakeProvider("anthropic", [Plan((), unavailable())])
    backup = FakeProvider("offline", [Plan(("x ",))])
    provider, _ = chain(down, backup)
    texts, result, error = await run(provider.stream(request(model="claude-x")))
    assert error is None and result is not None
    assert texts == ["x "]
    assert result.provider == "offline"
    assert result.extra["fallback_from"] == "anthropic"
    assert len(down.requests) == 3
    # The session's model is the first provider's; the fallback uses its own.
    assert down.requests[0].model == "claude-x"
    assert backup.requests[0].model == ""
    assert provider.counters["offline"].fallbacks == 1


async def test_a_spend_limit_is_not_retried_but_falls_back() -> None:
    spent = errors.http_error(429, error_code="enforced_spend_limit_reached", retry_after_s=None, provider="a")
    assert (spent.reason, spent.retryable) == (errors.QUOTA_EXHAUSTED, False)
    down = FakeProvider("anthropic", [Plan((), spent)])
    backup = FakeProvider("offline")
    provider, delays = chain(down, backup)
    _, result, error = await run(provider.stream(request()))
    assert error is None and result is not None and result.provider == "offline"
    assert len(down.requests) == 1 and delays == []


async def test_the_last_error_is_raised_when_every_provider_fails() -> None:
    first = FakeProvider("anthropic", [Plan((), unavailable())])
    second = FakeProvider("openai_compatible", [Plan((), ModelError("bad key", reason=errors.AUTH_FAILED))])
    provider, _ = chain(first, second)
    _, _, error = await run(provider.stream(request()))
    assert error is not None and error.reason == errors.AUTH_FAILED
    assert (len(first.requests), len(second.requests)) == (3, 1)


async def test_open_breaker_is_skipped_then_probed_after_the_cooldown() -> None:
    clock = Clock()
    down = FakeProvider("anthropic", [Plan((), unavailable())])
    backup = FakeProvider("offline")
    provider, _ = chain(down, backup, clock=clock, failure_threshold=3, cooldown_s=30)
    _, result, _ = await run(provider.stream(request()))  # three failed attempts open the breaker
    assert result is not None and result.provider == "offline"
    assert provider.breaker_states() == {"anthropic": "open", "offline": "closed"}
    assert provider.stats()["anthropic_breaker"] == 2
    for _ in range(3):
        _, result, _ = await run(provider.stream(request()))
        assert result is not None and result.provider == "offline"
    assert len(down.requests) == 3  # skipped while open
    assert provider.counters["anthropic"].skipped_open == 3

    clock.now += 31
    assert provider.breaker_states()["anthropic"] == "half_open"
    down.plans = [Plan(("back ",))]
    texts, result, _ = await run(provider.stream(request()))
    assert result is not None and result.provider == "anthropic" and texts == ["back "]
    assert provider.breaker_states()["anthropic"] == "closed"
    assert list(provider.breakers["anthropic"].transitions) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_a_failed_probe_is_not_retried_and_reopens() -> None:
    clock = Clock()
    down = FakeProvider("anthropic", [Plan((), unavailable())])
    backup = FakeProvider("offline")
    provider, _ = chain(down, backup, clock=clock, failure_threshold=1, cooldown_s=10)
    await run(provider.stream(request()))
    assert len(down.requests) == 1
    clock.now += 10
    _, result, _ = await run(provider.stream(request()))
    assert result is not None and result.provider == "offline"
    assert len(down.requests) == 2  # one probe, no retries against an open breaker
    assert provider.breaker_states()["anthropic"] == "open"


async def test_every_breaker_open_is_a_retryable_circuit_open_error() -> None:
    clock = Clock()
    down = FakeProvider("anthropic", [Plan((), unavailable())])
    provider, _ = chain(down, clock=clock, failure_threshold=1, cooldown_s=20)
    await run(provider.stream(request()))  # opens on the first failure, then is not retried
    assert len(down.requests) == 1
    clock.now += 5
    _, _, error = await run(provider.stream(request()))
    assert error is not None
    assert (error.reason, error.retryable, error.retry_after_s) == (errors.CIRCUIT_OPEN, True, 15)


async def test_caller_faults_do_not_count_against_the_breaker() -> None:
    invalid = ModelError("no such model", reason=errors.INVALID_REQUEST)
    provider, _ = chain(FakeProvider("anthropic", [Plan((), invalid)]), failure_threshold=1)
    for _ in range(3):
        _, _, error = await run(provider.stream(request()))
        assert error is not None and error.reason == errors.INVALID_REQUEST
    assert provider.breaker_states()["anthropic"] == "closed"


async def test_the_session_can_choose_its_provider_and_fallbacks() -> None:
    a, b, c = FakeProvider("anthropic"), FakeProvider("openai_compatible"), FakeProvider("offline")
    provider, _ = chain(a, b, c)
    assert provider.chain_for(request()) == ("anthropic", "openai_compatible", "offline")
    assert provider.chain_for(request(provider="openai_compatible")) == ("openai_compatible",)
    assert provider.chain_for(request(provider="offline", fallback_providers=("anthropic", "offline"))) == (
        "offline",
        "anthropic",
    )
    assert provider.chain_for(request(fallback_providers=("offline",))) == ("anthropic", "offline")
    assert provider.chain_for(request(provider="gpt", fallback_providers=("offline",))) == ("offline",)
    assert provider.chain_for(ModelRequest(system="", messages=())) == provider.default_chain
    _, result, _ = await run(provider.stream(request(provider="openai_compatible", model="llama")))
    assert result is not None and result.provider == "openai_compatible" and result.model == "llama"
    assert not a.requests


async def test_a_session_naming_only_unknown_providers_gets_not_configured() -> None:
    provider, _ = chain(FakeProvider("offline"))
    _, _, error = await run(provider.stream(request(provider="gpt")))
    assert error is not None
    assert (error.reason, error.retryable) == (errors.NOT_CONFIGURED, False)


async def test_closing_the_stream_closes_the_provider_and_gives_no_verdict() -> None:
    slow = FakeProvider("anthropic", [Plan(("a ",), hang=True)])
    provider, _ = chain(slow, failure_threshold=1)
    stream = provider.stream(request())
    assert await anext(stream) == TextDelta("a ")
    await stream.aclose()  # type: ignore[attr-defined]
    assert slow.closed == 1
    assert provider.breaker_states()["anthropic"] == "closed"
    assert provider.counters["anthropic"].failures == 0


async def test_cancelling_the_consumer_closes_the_provider() -> None:
    slow = FakeProvider("anthropic", [Plan(("a ",), hang=True)])
    provider, _ = chain(slow)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(request()):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.closed == 1


async def test_a_cancelled_probe_frees_the_half_open_slot() -> None:
    clock = Clock()
    slow = FakeProvider("anthropic", [Plan((), unavailable()), Plan(("a ",), hang=True)])
    provider, _ = chain(slow, clock=clock, failure_threshold=1, cooldown_s=1)
    await run(provider.stream(request()))
    clock.now += 1
    stream = provider.stream(request())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert provider.breaker_states()["anthropic"] == "half_open"
    assert provider.breakers["anthropic"].allow()


async def test_the_total_timeout_ends_the_turn_without_fallback() -> None:
    slow = FakeProvider("anthropic", [Plan((), hang=True)])
    backup = FakeProvider("offline")
    provider = ProviderChain({"anthropic": slow, "offline": backup}, ["anthropic", "offline"], total_timeout_s=0.05)
    texts, _, error = await run(provider.stream(request()))
    assert texts == []
    assert error is not None
    assert (error.reason, error.retryable) == (errors.TIMEOUT, True)
    assert not backup.requests
    assert slow.closed == 1


async def test_the_total_timeout_after_output_is_not_retryable() -> None:
    slow = FakeProvider("anthropic", [Plan(("a ",), hang=True)])
    provider = ProviderChain({"anthropic": slow}, ["anthropic"], total_timeout_s=0.05)
    texts, _, error = await run(provider.stream(request()))
    assert texts == ["a "]
    assert error is not None and (error.reason, error.retryable) == (errors.TIMEOUT, False)


async def test_no_retry_is_made_that_would_end_after_the_deadline() -> None:
    clock = Clock()
    down = FakeProvider("anthropic", [Plan((), unavailable(retry_after_s=20))])
    backup = FakeProvider("offline")
    provider, delays = chain(down, backup, clock=clock, total_timeout_s=10)
    _, result, _ = await run(provider.stream(request()))
    assert result is not None and result.provider == "offline"
    assert delays == [] and len(down.requests) == 1


async def test_a_stream_without_a_result_is_a_protocol_error_and_is_retried() -> None:
    truncated = FakeProvider("anthropic", [Plan((), result=False), Plan()])
    provider, _ = chain(truncated)
    _, result, error = await run(provider.stream(request()))
    assert error is None and result is not None
    assert len(truncated.requests) == 2


async def test_an_unexpected_exception_counts_as_a_failure_and_falls_back() -> None:
    buggy = FakeProvider("anthropic", [Plan(())])
    buggy.unexpected = RuntimeError("bug")
    provider, _ = chain(buggy, FakeProvider("offline"))
    _, result, error = await run(provider.stream(request()))
    assert error is None and result is not None and result.provider == "offline"
    assert provider.counters["anthropic"].failures == 1
    assert len(buggy.requests) == 1  # not retryable


def test_stats_are_flat_integers_per_provider() -> None:
    provider, _ = chain(FakeProvider("anthropic"), FakeProvider("offline"))
    stats = provider.stats()
    assert stats["anthropic_breaker"] == 0
    assert {"anthropic_attempts", "offline_fallbacks", "offline_skipped_open", "anthropic_breaker_opened"} <= set(stats)
    assert all(isinstance(v, int) for v in stats.values())


def test_a_default_chain_must_name_given_providers() -> None:
    with pytest.raises(ValueError, match="not given"):
        ProviderChain({"offline": FakeProvider("offline")}, ["anthropic"])
    with pytest.raises(ValueError):
        ProviderChain({"offline": FakeProvider("offline")}, [])


def test_host_helpers_read_breakers_and_counters_of_a_chain_only() -> None:
    from salon.providers import provider_breaker_states, provider_stats

    provider, _ = chain(FakeProvider("anthropic"), FakeProvider("offline"))
    assert provider_breaker_states(provider) == {"anthropic": "closed", "offline": "closed"}
    assert provider_stats(provider)["model_anthropic_breaker"] == 0
    assert provider_breaker_states(FakeProvider("offline")) == {}
    assert provider_stats(object()) == {}


def test_importing_the_providers_package_does_not_import_the_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, engine.config, providers; sys.exit('anthropic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
