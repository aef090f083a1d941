"""Mapping Salon errors to gRPC statuses and trailing metadata."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import grpc
import pytest

from salon.actors.model import ModelError
from salon.engine.status import (
    REASON_KEY,
    RETRY_AFTER_KEY,
    ClientGone,
    Unimplemented,
    as_salon_errors,
    error_boundary,
    status_code,
    trailing_metadata,
)
from salon.storage.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SalonError,
    Unauthenticated,
    Unavailable,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("m"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("m"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("m"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("m"), grpc.StatusCode.FAILED_PRECONDITION),
        (ResourceExhausted("m"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unavailable("m"), grpc.StatusCode.UNAVAILABLE),
        (Unauthenticated("m"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("m"), grpc.StatusCode.PERMISSION_DENIED),
        (DeadlineExceeded("m"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (Internal("m"), grpc.StatusCode.INTERNAL),
        (SalonError("m"), grpc.StatusCode.INTERNAL),
        (Unimplemented("m"), grpc.StatusCode.UNIMPLEMENTED),
        (ModelError("m"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code(error: SalonError, code: grpc.StatusCode) -> None:
    assert status_code(error) == code


def test_every_error_class_is_mapped() -> None:
    mapped = {InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted, Unavailable}
    mapped |= {DeadlineExceeded, Internal, Unimplemented, Unauthenticated, PermissionDenied}
    for cls in SalonError.__subclasses__():
        if cls.__module__ in {"salon.storage.errors", "salon.engine.status"}:
            assert cls in mapped, f"{cls.__name__} has no test of its status code"


def test_subclass_of_a_mapped_error_inherits_its_code() -> None:
    class SessionGone(NotFound):
        reason = "SESSION_GONE"

    assert status_code(SessionGone("m")) == grpc.StatusCode.NOT_FOUND


def test_trailing_metadata_carries_the_reason() -> None:
    assert trailing_metadata(NotFound("m", reason="SESSION_NOT_FOUND")) == ((REASON_KEY, "SESSION_NOT_FOUND"),)
    assert trailing_metadata(InvalidArgument("m")) == (("salon-error-reason", "INVALID_ARGUMENT"),)


@pytest.mark.parametrize(("seconds", "ms"), [(1.5, "1500"), (0.25, "250"), (2.0, "2000"), (0.0, "0")])
def test_trailing_metadata_carries_retry_after_in_ms(seconds: float, ms: str) -> None:
    error = ResourceExhausted("busy", reason="TOO_MANY_TURNS", retry_after_s=seconds)
    assert trailing_metadata(error) == (
        ("salon-error-reason", "TOO_MANY_TURNS"),
        ("salon-retry-after-ms", ms),
    )
    assert RETRY_AFTER_KEY == "salon-retry-after-ms"


def test_no_retry_after_without_a_hint() -> None:
    keys = [k for k, _ in trailing_metadata(Unavailable("down"))]
    assert keys == ["salon-error-reason"]


def test_as_salon_errors_hides_unexpected_exceptions() -> None:
    with pytest.raises(SalonError) as info, as_salon_errors():
        raise KeyError("secret-request-content")
    assert type(info.value) is SalonError
    assert "secret-request-content" not in str(info.value)
    assert status_code(info.value) == grpc.StatusCode.INTERNAL


def test_as_salon_errors_passes_salon_errors_through() -> None:
    with pytest.raises(NotFound), as_salon_errors():
        raise NotFound("m")


class _Aborted(Exception):
    pass


class _Context:
    """The part of a grpc.aio servicer context the error boundary uses."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.trailers: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self.trailers = md

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted


class _Servicer:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    @error_boundary
    async def Unary(self, request: str, context: _Context) -> str:
        if self.error is not None:
            raise self.error
        return request.upper()

    @error_boundary
    async def Streamed(self, request: str, context: _Context) -> AsyncIterator[str]:
        yield request
        if self.error is not None:
            raise self.error
        yield request.upper()


async def _streamed(servicer: _Servicer, context: _Context) -> list[str]:
    return [item async for item in servicer.Streamed("a", context)]


def test_the_boundary_keeps_the_handler_kind() -> None:
    # grpc.aio drives a handler by its kind: a generator stays a generator, a coroutine a coroutine.
    assert inspect.isasyncgenfunction(_Servicer.Streamed)
    assert inspect.iscoroutinefunction(_Servicer.Unary)
    assert _Servicer.Unary.__name__ == "Unary"


async def test_the_boundary_passes_answers_through() -> None:
    context = _Context()
    assert await _Servicer(None).Unary("a", context) == "A"
    assert await _streamed(_Servicer(None), context) == ["a", "A"]
    assert context.aborted is None


@pytest.mark.parametrize("streamed", [False, True])
async def test_the_boundary_ends_the_call_with_the_errors_status(streamed: bool) -> None:
    context = _Context()
    servicer = _Servicer(ResourceExhausted("slow down", reason="TURNS_PER_MINUTE", retry_after_s=2.0))
    with pytest.raises(_Aborted):
        await (_streamed(servicer, context) if streamed else servicer.Unary("a", context))
    assert context.aborted == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
    assert context.trailers == ((REASON_KEY, "TURNS_PER_MINUTE"), (RETRY_AFTER_KEY, "2000"))


@pytest.mark.parametrize("streamed", [False, True])
async def test_the_boundary_hides_unexpected_errors(streamed: bool) -> None:
    context = _Context()
    servicer = _Servicer(KeyError("secret-request-content"))
    with pytest.raises(_Aborted):
        await (_streamed(servicer, context) if streamed else servicer.Unary("a", context))
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.INTERNAL
    assert "secret" not in context.aborted[1]
    assert context.trailers == ((REASON_KEY, "INTERNAL"),)


async def test_the_boundary_ends_quietly_when_the_client_is_gone() -> None:
    context = _Context()
    assert await _Servicer(ClientGone()).Unary("a", context) is None
    assert await _streamed(_Servicer(ClientGone()), context) == ["a"]
    assert context.aborted is None


async def test_the_boundary_lets_cancellation_through() -> None:
    with pytest.raises(asyncio.CancelledError):
        await _Servicer(asyncio.CancelledError()).Unary("a", _Context())


def test_the_boundary_refuses_a_synchronous_handler() -> None:
    def handler(owner: object, request: object, context: object) -> None:
        return None

    with pytest.raises(TypeError):
        error_boundary(handler)
