"""Stored tool answers (:class:`~salon.storage.tool_answers.AnswerStore`) in a JetStream key-value bucket.

Keys are ``<tenant>.<session>.<turn>.<call>.<r|d>``, the call id in unpadded base64url (a model may name a call
with any printable characters; keys take only a few). A new answer is created only where no answer is
(``kv.create``: the server refuses a second), and carries its own time-to-live (a per-message TTL); the bucket's
age limit is a backstop past the longest wait a turn may have.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.storage.errors import Unavailable
from salon.storage.jetstream.sessions import open_bucket
from salon.storage.reasons import Reason
from salon.storage.subjects import Names
from salon.storage.tool_answers import AnswerKind, StoredAnswer

log = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
MAX_AGE_S = 25 * 3600.0
"""The bucket's age limit: past a turn's longest tool wait (24 h) and the TTL's margin."""
WATCH_POLL_S = 30.0
"""How long a watch waits for the next update before it asks again (a quiet bucket is no error)."""
MIN_TTL_S = 1.0
"""Shortest per-message TTL the server takes."""
_SUFFIX: dict[AnswerKind, str] = {"result": "r", "decision": "d"}


def _unavailable() -> Unavailable:
    return Unavailable("stored tool answers are not reachable", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0)


def _call_token(call_id: str) -> str:
    return base64.urlsafe_b64encode(call_id.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def _turn_prefix(tenant_id: str, session_id: str, turn_id: str) -> str:
    return f"{tenant_id}.{session_id}.{turn_id}"


def answer_key(tenant_id: str, session_id: str, turn_id: str, call_id: str, kind: AnswerKind) -> str:
    """The bucket key of one call's answer of ``kind``."""
    return f"{_turn_prefix(tenant_id, session_id, turn_id)}.{_call_token(call_id)}.{_SUFFIX[kind]}"


class KvAnswerStore:
    """:class:`~salon.storage.tool_answers.AnswerStore` on a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, *, replicas: int = 0) -> KvAnswerStore:
        """The deployment's tool answer bucket, created (with ``replicas`` copies) when need be."""
        return cls(await open_bucket(js, names.tool_answers_bucket, replicas=replicas, ttl_s=MAX_AGE_S))

    async def put(self, answer: StoredAnswer, ttl_s: float) -> tuple[StoredAnswer, bool]:
        """Store ``answer`` unless one of its kind is stored for its call; the one that holds, and whether it is
        this one."""
        key = answer_key(answer.tenant_id, answer.session_id, answer.turn_id, answer.call_id, answer.kind)
        stored = dataclasses.replace(answer, stored_at_ns=time.time_ns())
        ttl = min(max(ttl_s, MIN_TTL_S), MAX_AGE_S)
        for _ in range(3):
            try:
                await self._kv.create(key, stored.to_bytes(), msg_ttl=ttl)
                return stored, True
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            except _NATS_ERRORS as exc:
                raise _unavailable() from exc
            held = await self.get(answer.tenant_id, answer.session_id, answer.turn_id, answer.call_id, answer.kind)
            if held is not None:
                return held, False
            # The answer held expired between the two steps: the key is free again.
        raise _unavailable()

    async def get(
        self, tenant_id: str, session_id: str, turn_id: str, call_id: str, kind: AnswerKind
    ) -> StoredAnswer | None:
        """The answer of ``kind`` stored for the call, if any."""
        try:
            entry = await self._kv.get(answer_key(tenant_id, session_id, turn_id, call_id, kind))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        return _read(entry.value)

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[StoredAnswer]:
        """Every answer stored for the turn's calls, in the order stored (one pass over the bucket's latest
        values under the turn's keys)."""
        answers: list[StoredAnswer] = []
        try:
            watcher = await self._kv.watch(f"{_turn_prefix(tenant_id, session_id, turn_id)}.>", ignore_deletes=True)
            try:
                while (entry := await watcher.updates(timeout=5.0)) is not None:  # type: ignore[no-untyped-call]
                    answer = _read(entry.value)
                    if answer is not None:
                        answers.append(answer)
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        return sorted(answers, key=lambda a: a.stored_at_ns)

    async def watch(self) -> AsyncIterator[StoredAnswer]:
        """Every answer kept now, then each one stored from now on (one ordered consumer on the bucket)."""
        try:
            watcher = await self._kv.watch(">", ignore_deletes=True)
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=WATCH_POLL_S)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue  # nothing stored meanwhile
                except _NATS_ERRORS as exc:
                    raise _unavailable() from exc
                answer = _read(entry.value) if entry is not None else None  # None: the kept ones are all out
                if answer is not None:
                    yield answer
        finally:
            with contextlib.suppress(*_NATS_ERRORS):
                await watcher.stop()  # type: ignore[no-untyped-call]


def _read(value: bytes | None) -> StoredAnswer | None:
    if not value:
        return None
    try:
        return StoredAnswer.from_bytes(value)
    except (ValueError, KeyError, TypeError):
        log.warning("a stored tool answer could not be read; it is skipped")
        return None
