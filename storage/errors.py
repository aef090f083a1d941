"""The engine's one exception root.

Every error that reaches a caller is a :class:`SalonError`; ``engine`` maps each subclass to one gRPC status.
Messages are written for people and never contain request content.
"""

from __future__ import annotations

from salon.storage.reasons import Reason


class SalonError(Exception):
    """Root of Salon's errors: a stable ``reason`` (a :class:`~salon.storage.reasons.Reason`) and a human message."""

    # Typed str, not Reason: a few modules still raise with the literal string (equal to the member).
    reason: str = Reason.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, reason: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.retry_after_s = retry_after_s


class InvalidArgument(SalonError):
    """The request is malformed; sending it again unchanged will fail again."""

    reason: str = Reason.INVALID_ARGUMENT


class Unauthenticated(SalonError):
    """The call carries no valid credentials. One message for every cause (missing, malformed, unknown,
    revoked), so a caller learns nothing about which keys exist."""

    reason: str = Reason.UNAUTHENTICATED


class PermissionDenied(SalonError):
    """The caller is known but may not do this (for example read another tenant's usage without an admin key)."""

    reason: str = Reason.PERMISSION_DENIED


class NotFound(SalonError):
    """The named thing does not exist, or the caller may not see it (the two are indistinguishable)."""

    reason: str = Reason.NOT_FOUND


class AlreadyExists(SalonError):
    """A caller-chosen id is taken."""

    reason: str = Reason.ALREADY_EXISTS


class FailedPrecondition(SalonError):
    """The request is valid but the target's state refuses it now (for example a busy session)."""

    reason: str = Reason.FAILED_PRECONDITION


class ResourceExhausted(SalonError):
    """A limit was reached; ``retry_after_s`` says when trying again may work."""

    reason: str = Reason.RESOURCE_EXHAUSTED
    retryable = True


class Unavailable(SalonError):
    """A dependency (NATS, storage, hosts) cannot be reached; retrying later may work."""

    reason: str = Reason.UNAVAILABLE
    retryable = True


class DeadlineExceeded(SalonError):
    """The operation did not finish in the time allowed."""

    reason: str = Reason.DEADLINE_EXCEEDED
    retryable = True


class Internal(SalonError):
    """A bug or an unexpected failure inside the engine."""

    reason: str = Reason.INTERNAL
