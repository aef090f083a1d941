"""Degrading instead of failing: retries, a circuit breaker per provider, and a chain of fallback providers.

The rule that shapes all of it: once the first token of an answer has reached the session, nothing is sent
again. Before that, a failing attempt is retried (jittered exponential backoff, honouring the provider's
``retry-after``) and then the next provider of the chain is tried; after it, the turn ends as partial with an
error that is not retryable, so no text is ever duplicated.

:class:`ProviderChain` is itself a :class:`~salon.actors.model.ModelProvider`, so the session actor sees one
provider. The session's choice of provider and fallbacks travels in the request (``provider`` and
``fallback_providers``, read here when the request has them); without them the deployment's chain applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from salon.actors.model import ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta, ToolCall
from salon.providers import errors
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATE_CODES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
"""Breaker states as numbers, for gauges."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before sending a failed request again (before its first token only)."""

    max_attempts: int = 3
    """Attempts per provider, the first included."""
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0
    """A ``retry-after`` longer than this is not waited for: the chain moves on to its next provider."""

    def delay_s(self, attempts: int, error: ModelError, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before attempt ``attempts + 1`` after ``error``; None when it should not be made."""
        if not error.retryable or attempts >= self.max_attempts:
            return None
        cap = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempts - 1))
        # "Equal jitter": at least half the backoff, so retries always spread out, never all at once.
        backoff = cap / 2 + rand() * cap / 2
        if error.retry_after_s is None:
            return backoff
        retry_after = float(error.retry_after_s)
        if retry_after > self.max_retry_after_s:
            return None
        # The provider said when: wait that long, plus a little jitter so many sessions do not return together.
        return retry_after + rand() * min(self.base_delay_s, cap)


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open after ``cooldown_s`` (one probe
    request allowed) → closed on the probe's success, open again on its failure."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(failure_threshold, 1)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.transitions: deque[tuple[BreakerState, BreakerState]] = deque(maxlen=64)
        """The latest state changes, oldest first."""
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down is over reads half-open)."""
        self._refresh()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        if self.state != "open":
            return 0.0
        return max(self._opened_at + self.cooldown_s - self._clock(), 0.0)

    def allow(self) -> bool:
        """Whether a request may go to the provider now. In half-open state only one request (the probe) is let
        through until it is settled by :meth:`record_success`, :meth:`record_failure` or :meth:`release`."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        """The provider answered."""
        self._failures = 0
        self._probing = False
        if self._state != "closed":
            self._move("closed")

    def record_failure(self) -> None:
        """The provider failed (a failure of the provider, not of the caller's request)."""
        self._failures += 1
        self._probing = False
        state = self.state
        if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._move("open")

    def release(self) -> None:
        """A request ended without a verdict on the provider (cancelled, or the caller's fault)."""
        self._probing = False

    def _refresh(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._move("half_open")

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self.transitions.append((old, new))
        if new == "open":
            self.times_opened += 1
            log.warning(
                "circuit breaker of %s opened after %d failure(s); retrying it in %.0f s",
                self.name,
                self._failures,
                self.cooldown_s,
            )
        else:
            log.info("circuit breaker of %s: %s -> %s", self.name, old, new)


@dataclass(slots=True)
class ProviderCounters:
    """What a chain did with one provider (for metrics)."""

    attempts: int = 0
    failures: int = 0
    retries: int = 0
    answered: int = 0
    fallbacks: int = 0
    """Turns this provider answered after an earlier provider of the chain failed or was skipped."""
    skipped_open: int = 0
    """Times it was skipped because its breaker was open."""
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    """Failed attempts by error reason (``rate_limited``, ``overloaded``, ``timeout`` …)."""


Sleep = Callable[[float], Awaitable[None]]


class ProviderChain:
    """A :class:`~salon.actors.model.ModelProvider` over named providers: retries, breakers, fallbacks, a total timeout.

    ``default_chain`` is the deployment's order; a request naming ``provider``/``fallback_providers`` gets its
    own. The request's ``model`` goes to the first provider of the chain only; fallbacks use their own model.
    """

    name = "chain"

    def __init__(
        self,
        providers: Mapping[str, ModelProvider],
        default_chain: Sequence[str],
        *,
        retry: RetryPolicy | None = None,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        total_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        unknown = [n for n in default_chain if n not in providers]
        if not default_chain or unknown:
            raise ValueError(f"the default chain {list(default_chain)} names providers that are not given: {unknown}")
        self._providers = dict(providers)
        self.default_chain = tuple(dict.fromkeys(default_chain))
        self.retry = retry or RetryPolicy()
        self.total_timeout_s = total_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self.breakers = {
            n: CircuitBreaker(n, failure_threshold=failure_threshold, cooldown_s=cooldown_s, clock=clock)
            for n in self._providers
        }
        self.counters = {n: ProviderCounters() for n in self._providers}

    @property
    def providers(self) -> Mapping[str, ModelProvider]:
        """The providers by name."""
        return self._providers

    def breaker_states(self) -> dict[str, str]:
        """Each provider's breaker state: ``closed``, ``open`` or ``half_open`` (for health output)."""
        return {name: breaker.state for name, breaker in self.breakers.items()}

    def stats(self) -> dict[str, int]:
        """Flat counters for metrics: ``<provider>_breaker`` (0 closed, 1 half-open, 2 open), ``_attempts``,
        ``_failures``, ``_retries``, ``_answered``, ``_fallbacks``, ``_skipped_open``, ``_breaker_opened``, and
        ``_errors.<reason>`` per error reason."""
        out: dict[str, int] = {}
        for name, breaker in self.breakers.items():
            counters = self.counters[name]
            out[f"{name}_breaker"] = BREAKER_STATE_CODES[breaker.state]
            out[f"{name}_breaker_opened"] = breaker.times_opened
            for field in dataclasses.fields(counters):
                if field.name != "errors":
                    out[f"{name}_{field.name}"] = getattr(counters, field.name)
            for reason, count in counters.errors.items():
                out[f"{name}_errors.{reason}"] = count
        return out

    def chain_for(self, request: ModelRequest) -> tuple[str, ...]:
        """The providers to try for ``request``, in order (unknown names dropped, with a warning)."""
        chosen = str(getattr(request, "provider", "") or "")
        fallbacks = tuple(str(n) for n in (getattr(request, "fallback_providers", ()) or ()))
        if not chosen and not fallbacks:
            return self.default_chain
        wanted = (chosen or self.default_chain[0], *fallbacks)
        known = tuple(n for n in dict.fromkeys(wanted) if n in self._providers)
        if len(known) < len(set(wanted)):
            log.warning("ignoring model providers this deployment does not have: %s", set(wanted) - set(known))
        return known

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Answer from the first provider of the chain that can, falling back only before the first token."""
        chain = self.chain_for(request)
        if not chain:
            raise ModelError("none of the session's model providers is configured here", reason=errors.NOT_CONFIGURED)
        deadline = None if self.total_timeout_s is None else self._clock() + self.total_timeout_s
        last_error: ModelError | None = None
        passed: list[str] = []
        """Providers that failed or were skipped before the one answering."""
        for index, name in enumerate(chain):
            # The session's model names a model of its chosen provider; fallbacks use their configured one.
            attempt_request = request if index == 0 else dataclasses.replace(request, model="")
            try:
                # Closed on the way out, so closing this stream closes the provider's at once (and its HTTP stream).
                async with contextlib.aclosing(self._from_provider(name, attempt_request, deadline, passed)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except _MovedOn as moved_on:
                last_error = moved_on.error or last_error
            passed.append(name)
            if index + 1 < len(chain):
                log.warning("model provider %s is failing or open; falling back to %s", name, chain[index + 1])
        if last_error is not None:
            raise last_error
        retry_in = min(self.breakers[n].retry_in_s() for n in chain)
        raise ModelError(
            "every model provider is failing (circuit breakers open)",
            reason=errors.CIRCUIT_OPEN,
            retryable=True,
            retry_after_s=retry_in or None,
        )

    async def _from_provider(
        self, name: str, request: ModelRequest, deadline: float | None, passed: list[str]
    ) -> AsyncGenerator[ModelChunk, None]:
        """The answer of provider ``name``, retried while no output reached the session; :class:`_MovedOn` when
        the chain should try its next provider."""
        breaker, counters = self.breakers[name], self.counters[name]
        attempts = 0
        error: ModelError | None = None
        while breaker.allow():
            attempts += 1
            counters.attempts += 1
            if attempts > 1:
                counters.retries += 1
            try:
                async with contextlib.aclosing(self._attempt(name, request, deadline, attempts, passed)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except _AttemptFailed as failed:
                error = failed.error
            if not await self._before_retry(name, error, attempts, deadline):
                raise _MovedOn(error)
        counters.skipped_open += 1
        raise _MovedOn(error)

    async def _attempt(
        self, name: str, request: ModelRequest, deadline: float | None, attempts: int, passed: list[str]
    ) -> AsyncGenerator[ModelChunk, None]:
        """One request to provider ``name``: its output, then its result labelled. A failure is settled with
        the breaker and raised: as :class:`_AttemptFailed` before any output, as a final (not retryable)
        :class:`ModelError` after some."""
        breaker, counters = self.breakers[name], self.counters[name]
        started = False
        error: ModelError
        inner = self._providers[name].stream(request)
        try:
            while (chunk := await _next_chunk(inner, deadline, self._clock, name)) is not None:
                if isinstance(chunk, TextDelta | ToolCall):
                    # A tool call is output too: after it, a retry could ask for the call twice.
                    started = True
                    yield chunk
                    continue
                breaker.record_success()
                counters.answered += 1
                if passed:
                    counters.fallbacks += 1
                yield _labelled(chunk, name, attempts, passed)
                return
            raise errors.protocol_error(name, "the stream ended without a result")
        except ModelError as exc:
            error = exc
        except (asyncio.CancelledError, GeneratorExit):
            # The turn was cancelled or its stream closed: no verdict on the provider.
            breaker.release()
            raise
        except Exception as exc:
            log.exception("model provider %s failed unexpectedly", name)
            error = ModelError(f"{name} failed: {type(exc).__name__}", reason=Reason.MODEL_ERROR)
        finally:
            # Closing the provider's stream is what closes the upstream HTTP stream, at once.
            await _aclose(inner)
        self._settle(breaker, counters, error)
        if started:
            # Text already reached the session: never send the request again, anywhere.
            raise ModelError(error.message, reason=error.reason, retryable=False) from error
        raise _AttemptFailed(error)

    async def _before_retry(self, name: str, error: ModelError, attempts: int, deadline: float | None) -> bool:
        """Wait before sending the request to ``name`` again; False when it should not be sent there again."""
        if error.reason == errors.TIMEOUT:
            raise error  # the turn's time is spent: no retry, no fallback
        delay = self.retry.delay_s(attempts, error, self._rand)
        if delay is None or self.breakers[name].state == "open":
            return False  # not worth sending again here (or the breaker just opened): next provider
        if deadline is not None and self._clock() + delay >= deadline:
            return False
        log.warning("%s failed (%s); attempt %d in %.2f s", name, error.reason, attempts + 1, delay)
        await self._sleep(delay)
        return True

    @staticmethod
    def _settle(breaker: CircuitBreaker, counters: ProviderCounters, error: ModelError) -> None:
        if error.reason in errors.CALLER_FAULTS:
            breaker.release()
        else:
            counters.failures += 1
            counters.errors[error.reason] = counters.errors.get(error.reason, 0) + 1
            breaker.record_failure()


class _AttemptFailed(Exception):
    """An attempt failed before any output: the request may be sent again, here or to the next provider."""

    def __init__(self, error: ModelError) -> None:
        super().__init__(error.message)
        self.error = error


class _MovedOn(Exception):
    """A provider was given up (failing, or its breaker open): the chain tries its next one. ``error`` is its
    last failure (None when it was skipped without an attempt)."""

    def __init__(self, error: ModelError | None) -> None:
        super().__init__(error.message if error is not None else "skipped")
        self.error = error


def _labelled(result: ModelResult, name: str, attempts: int, passed: list[str]) -> ModelResult:
    """The result, saying which provider answered and after what."""
    extra = dict(result.extra)
    extra["attempts"] = str(attempts)
    if passed:
        extra["fallback_from"] = ",".join(passed)
    return dataclasses.replace(result, provider=result.provider or name, extra=extra)


async def _next_chunk(
    stream: AsyncIterator[ModelChunk], deadline: float | None, clock: Callable[[], float], name: str
) -> ModelChunk | None:
    """The next chunk of ``stream`` (None at its end), cut off with a retryable
    :data:`~salon.providers.errors.TIMEOUT` error at ``deadline``."""
    try:
        if deadline is None:
            return await anext(stream)
        async with asyncio.timeout(max(deadline - clock(), 0.0)):
            return await anext(stream)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise ModelError(
            f"{name} did not finish within the turn's time", reason=errors.TIMEOUT, retryable=True
        ) from None


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def provider_breaker_states(provider: object) -> dict[str, str]:
    """The breaker states of ``provider`` if it is a chain (for a host's health output), else nothing."""
    states = getattr(provider, "breaker_states", None)
    return dict(states()) if callable(states) else {}


def provider_stats(provider: object) -> dict[str, int]:
    """The chain's counters of ``provider`` (for a host's metrics), prefixed ``model_``; else nothing."""
    stats = getattr(provider, "stats", None)
    return {f"model_{key}": int(value) for key, value in stats().items()} if callable(stats) else {}
