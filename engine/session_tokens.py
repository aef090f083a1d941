"""Session tokens: short-lived, scoped credentials for browsers and any other client that must not hold an API key.

A backend holding its tenant's API key asks for one (``SessionTokenService.IssueSessionToken``) and hands it to the
page; the page sends it as ``authorization: Bearer <token>``, to the web bridge or to a gateway directly. What a
token may do is checked by :mod:`salon.engine.token_scope`.

Format, version 1: four parts joined by dots::

    sst1.<key id>.<claims>.<signature>

- ``key id``: 8 lowercase hex characters naming the signing key.
- ``claims``: base64url without padding of a compact JSON object: ``tid`` the tenant, ``sid`` the session (empty
  for a user token), ``sub`` the user (may be empty), ``rts`` the rights (sorted names: send, resume, cancel,
  read, tools, approve, create), ``iat`` and ``exp`` issue and expiry time (Unix seconds), ``jti`` the token id
  (16 hex characters).
- ``signature``: base64url without padding of HMAC-SHA256(key, ``"sst1.<key id>.<claims>"``).

The signature is checked (in constant time) before the claims are even decoded, so nothing an attacker writes is
parsed. An unknown key, a bad signature or malformed claims all get the same refusal (``TOKEN_INVALID``); a valid
token past its expiry gets ``TOKEN_EXPIRED``, so a page knows to ask its backend for a new one. Claims are signed,
not encrypted: anyone holding the token can read them (the page does, to learn its session and expiry).

Keys live in a JSON file (``session_token_keys_file``, default ``<data_dir>/session-token-keys.json``), created on
first start with one random 256-bit key and mode 0600; a file readable by others is refused. The first key signs,
every listed key verifies. Rotation: when the signing key is older than ``session_token_rotate_s`` a new one is
put first; an old key is dropped once every token it signed has expired (``session_token_max_ttl_s`` after it
stopped signing). Every gateway sharing the file picks a change up within a second, and at once on a key id it
does not know. An operator may also edit the file (put a new key first; delete a key to revoke its tokens).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from salon.storage.errors import InvalidArgument, Unauthenticated
from salon.storage.ids import is_valid_id
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

PREFIX = "sst1"
"""The first part of every version-1 token; an API key (``salon_…``) never starts with it."""
MAX_TOKEN_CHARS = 2048
MAX_USER_CHARS = 128
KEY_ID_CHARS = 8
_RELOAD_INTERVAL_S = 1.0
_RETIRED_GRACE_S = 60.0  # clock differences between the gateways that share the keys


class Right(StrEnum):
    """What a token lets its holder do (the API's ``TokenRight``, by name)."""

    SEND = "send"
    RESUME = "resume"
    CANCEL = "cancel"
    READ = "read"
    TOOLS = "tools"
    APPROVE = "approve"
    CREATE = "create"


DEFAULT_RIGHTS = frozenset({Right.SEND, Right.RESUME, Right.CANCEL, Right.READ})
"""The rights of a session token when the request names none."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says. ``session_id`` empty: a user token (it may only create sessions)."""

    tenant_id: str
    session_id: str
    user: str
    rights: frozenset[Right]
    issued_at: int
    expires_at: int
    token_id: str
    key_id: str

    @property
    def is_user_token(self) -> bool:
        """Whether this token names a user rather than one session."""
        return not self.session_id

    def allows(self, right: Right) -> bool:
        """Whether the token grants ``right``."""
        return right in self.rights

    def _payload(self) -> dict[str, Any]:
        return {
            "tid": self.tenant_id,
            "sid": self.session_id,
            "sub": self.user,
            "rts": sorted(str(r) for r in self.rights),
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jti": self.token_id,
        }


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One signing key: its id, its 256-bit secret and when it was made (Unix seconds)."""

    key_id: str
    secret: bytes
    created: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: TokenKey, signed_part: str) -> str:
    return _b64(hmac.new(key.secret, signed_part.encode("ascii"), hashlib.sha256).digest())


def check_user(user: str) -> str:
    """A token's user label: at most 128 characters, none of them a control character."""
    if len(user) > MAX_USER_CHARS or not user.isprintable():
        raise InvalidArgument(
            f"user must be at most {MAX_USER_CHARS} printable characters", reason=Reason.BAD_TOKEN_USER
        )
    return user


_INVALID = "the session token is not valid"


def _invalid() -> Unauthenticated:
    return Unauthenticated(_INVALID, reason=Reason.TOKEN_INVALID)


def _claims_from(payload: Any, key_id: str) -> TokenClaims:
    """Claims from a decoded (already authenticated) payload; ``ValueError`` when a field is missing or wrong."""
    if not isinstance(payload, dict):
        raise ValueError("claims are not an object")
    tenant, session, user, rights = payload.get("tid"), payload.get("sid"), payload.get("sub"), payload.get("rts")
    issued, expires, token_id = payload.get("iat"), payload.get("exp"), payload.get("jti")
    if not (isinstance(tenant, str) and is_valid_id(tenant)):
        raise ValueError("tid")
    if not (isinstance(session, str) and (session == "" or is_valid_id(session))):
        raise ValueError("sid")
    if not (isinstance(user, str) and isinstance(token_id, str) and isinstance(rights, list)):
        raise ValueError("sub, jti or rts")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (issued, expires)):
        raise ValueError("iat or exp")
    return TokenClaims(
        tenant_id=tenant,
        session_id=session,
        user=user,
        rights=frozenset(Right(r) for r in rights),  # ValueError for a name this version does not know
        issued_at=int(issued),  # type: ignore[arg-type]
        expires_at=int(expires),  # type: ignore[arg-type]
        token_id=token_id,
        key_id=key_id,
    )


class KeyFile:
    """The signing keys' file: created with one key when missing, read, rotated under a lock.

    Writes go to a new file (mode 0600) renamed over the old one, so a reader never sees half a file; rotation
    holds an exclusive ``flock`` on ``<file>.lock`` so two gateways sharing the file never both add a key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def stamp(self) -> tuple[int, int] | None:
        """(modification time, size) of the file, to notice a change; None when it is missing."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def read(self) -> list[TokenKey]:
        """The keys, newest first; :class:`InvalidArgument` (``INVALID_CONFIG``) for a file that is unusable."""
        try:
            st = self.path.stat()
            if st.st_mode & 0o077:
                raise InvalidArgument(
                    f"the session token keys file {self.path} is readable by other users: chmod 600 it",
                    reason=Reason.INVALID_CONFIG,
                )
            data = json.loads(self.path.read_text("utf-8"))
            keys = [
                TokenKey(str(k["id"]), _unb64(str(k["secret"])), int(k["created"]))
                for k in data["keys"]
                if isinstance(k, dict)
            ]
        except InvalidArgument:
            raise
        except (OSError, ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidArgument(
                f"the session token keys file {self.path} cannot be read as a list of keys",
                reason=Reason.INVALID_CONFIG,
            ) from None
        usable = [k for k in keys if len(k.key_id) == KEY_ID_CHARS and len(k.secret) >= 32]
        if not usable or len(usable) != len(keys):
            raise InvalidArgument(
                f"the session token keys file {self.path} needs keys with an 8-character id and a secret of at "
                "least 32 bytes",
                reason=Reason.INVALID_CONFIG,
            )
        return usable

    def write(self, keys: Iterable[TokenKey]) -> None:
        """Replace the file's keys (atomically, mode 0600)."""
        text = json.dumps(
            {
                "version": 1,
                "keys": [{"id": k.key_id, "secret": _b64(k.secret), "created": k.created} for k in keys],
            },
            indent=2,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's exclusive lock (between processes) for a read-modify-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def new_key(now: float) -> TokenKey:
    """A new random signing key."""
    return TokenKey(secrets.token_hex(KEY_ID_CHARS // 2), secrets.token_bytes(32), int(now))


class SessionTokens:
    """Mints and verifies session tokens with the keys of one :class:`KeyFile`.

    ``rotate_s`` 0 never rotates; ``max_ttl_s`` bounds every token's life (and so how long a retired key must
    still verify). ``clock`` returns Unix seconds (tests pass their own)."""

    def __init__(
        self,
        path: Path,
        *,
        max_ttl_s: float,
        rotate_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._file = KeyFile(path)
        self.max_ttl_s = max_ttl_s
        self.rotate_s = rotate_s
        self._clock = clock
        self._keys: dict[str, TokenKey] = {}
        self._signing: TokenKey | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")

    @property
    def path(self) -> Path:
        """The keys file."""
        return self._file.path

    def open(self) -> None:
        """Read the keys, creating the file with one key when it is missing and rotating a key that is due."""
        with self._file.locked():
            if self._file.stamp() is None:
                self._file.write([new_key(self._clock())])
                log.info("created the session token keys file %s", self._file.path)
        self._reload(force=True)
        self._rotate_if_due()

    def mint(
        self, tenant_id: str, session_id: str, *, user: str, rights: Iterable[Right], ttl_s: float
    ) -> tuple[str, TokenClaims]:
        """A new token and its claims; the caller has checked who may have it (``engine.token_service``)."""
        self._rotate_if_due()
        signing = self._signing
        assert signing is not None, "SessionTokens.open() was not called"
        now = int(self._clock())
        claims = TokenClaims(
            tenant_id=tenant_id,
            session_id=session_id,
            user=user,
            rights=frozenset(rights),
            issued_at=now,
            expires_at=now + max(1, int(ttl_s)),
            token_id=secrets.token_hex(8),
            key_id=signing.key_id,
        )
        body = _b64(json.dumps(claims._payload(), separators=(",", ":"), sort_keys=True).encode())
        signed_part = f"{PREFIX}.{signing.key_id}.{body}"
        return f"{signed_part}.{_sign(signing, signed_part)}", claims

    def verify(self, token: str) -> TokenClaims:
        """The claims of a genuine, unexpired token; :class:`Unauthenticated` otherwise (``TOKEN_INVALID`` or
        ``TOKEN_EXPIRED``)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != PREFIX:
            raise _invalid()
        _, key_id, body, signature = parts
        key = self._key(key_id)
        if key is None:
            raise _invalid()
        if not hmac.compare_digest(_sign(key, f"{PREFIX}.{key_id}.{body}").encode(), signature.encode("utf-8")):
            raise _invalid()
        try:
            claims = _claims_from(json.loads(_unb64(body)), key_id)
        except (ValueError, binascii.Error):
            # Signed by us, yet unreadable: a token of a newer format, or a bug. Refused the same way.
            raise _invalid() from None
        if self._clock() >= claims.expires_at:
            raise Unauthenticated("the session token has expired", reason=Reason.TOKEN_EXPIRED)
        return claims

    def _key(self, key_id: str) -> TokenKey | None:
        self._reload()
        key = self._keys.get(key_id)
        if key is None and len(key_id) == KEY_ID_CHARS:
            # Maybe another gateway has just rotated: look at the file now rather than within the second.
            self._reload(force=True)
            key = self._keys.get(key_id)
        return key

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < _RELOAD_INTERVAL_S:
            return
        self._checked_at = now
        stamp = self._file.stamp()
        if stamp == self._stamp and self._keys:
            return
        try:
            keys = self._file.read()
        except InvalidArgument:
            if not self._keys:
                raise
            # Keep verifying with the keys read last rather than refusing every caller over a bad edit.
            log.error("the session token keys file became unreadable; keeping the keys read before")
            return
        self._keys = {k.key_id: k for k in keys}
        self._signing = keys[0]
        self._stamp = stamp

    def _rotate_if_due(self) -> None:
        signing = self._signing
        if self.rotate_s <= 0 or signing is None or self._clock() - signing.created < self.rotate_s:
            return
        with self._file.locked():
            now = self._clock()
            found = self._file.read()  # another process may have rotated already
            keys = [new_key(now), *found] if now - found[0].created >= self.rotate_s else found
            # A key stops signing when the next one is made; its last token expires max_ttl_s after that.
            kept = [keys[0]] + [
                old
                for newer, old in itertools.pairwise(keys)
                if now - newer.created < self.max_ttl_s + _RETIRED_GRACE_S
            ]
            if kept != found:
                self._file.write(kept)
                log.info("session token signing key rotated (%d keys kept)", len(kept))
        self._reload(force=True)
