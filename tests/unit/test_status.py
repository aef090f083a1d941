"""Mapping Salon errors to gRPC statuses and trailing metadata."""

from __future__ import annotations

import grpc
import pytest

from actors.model import ModelError
from engine.status import (
    REASON_KEY,
    RETRY_AFTER_KEY,
    Unimplemented,
    as_salon_errors,
    status_code,
    trailing_metadata,
)
from storage.errors import (
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
        if cls.__module__ in {"storage.errors", "engine.status"}:
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
