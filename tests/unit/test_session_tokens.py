"""Session tokens: the format, what verification refuses and why, the keys file and its rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from salon.engine.session_tokens import PREFIX, KeyFile, Right, SessionTokens, check_user
from salon.storage.errors import InvalidArgument, Unauthenticated
from salon.storage.reasons import Reason

DAY = 86400.0


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tokens_at(path: Path, clock: Clock, *, rotate_s: float = 0.0, max_ttl_s: float = 3600.0) -> SessionTokens:
    tokens = SessionTokens(path, max_ttl_s=max_ttl_s, rotate_s=rotate_s, clock=clock)
    tokens.open()
    return tokens


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


def mint(tokens: SessionTokens, **changes: object) -> str:
    fields: dict[str, object] = {
        "user": "alice",
        "rights": {Right.SEND, Right.RESUME},
        "ttl_s": 600,
    }
    fields.update(changes)
    token, _ = tokens.mint("acme", "s1", **fields)  # type: ignore[arg-type]
    return token


def refusal(tokens: SessionTokens, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        tokens.verify(token)
    return str(caught.value.reason)


def test_a_token_carries_its_claims_and_verifies(keys: Path, clock: Clock) -> None:
    tokens = tokens_at(keys, clock)
    token, minted = tokens.mint("acme", "s1", user="alice", rights={Right.SEND, Right.READ}, ttl_s=600)
    assert token.startswith(PREFIX + ".")
    prefix, key_id, body, signature = token.split(".")
    assert (prefix, len(key_id), len(signature)) == ("sst1", 8, 43)
    # The documented claims, readable by anyone holding the token (the page reads them).
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims == {
        "tid": "acme",
        "sid": "s1",
        "sub": "alice",
        "rts": ["read", "send"],
        "iat": int(clock.now),
        "exp": int(clock.now) + 600,
        "jti": minted.token_id,
    }
    verified = tokens.verify(token)
    assert verified == minted
    assert verified.allows(Right.SEND) and not verified.allows(Right.CANCEL)
    assert not verified.is_user_token


def test_an_expired_token_is_refused_as_expired(keys: Path, clock: Clock) -> None:
    tokens = tokens_at(keys, clock)
    token = mint(tokens, ttl_s=60)
    clock.now += 59
    tokens.verify(token)
    clock.now += 1
    assert refusal(tokens, token) == Reason.TOKEN_EXPIRED


def _flip(text: str, index: int) -> str:
    chars = list(text)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda p: [p[0], p[1], p[2][:-2] + ("A" if p[2][-2] != "A" else "B") + p[2][-1], p[3]], id="claims"
        ),
        pytest.param(lambda p: [*p[:3], _flip(p[3], -1)], id="signature"),
        pytest.param(lambda p: ["sst2", *p[1:]], id="version"),
        pytest.param(lambda p: [p[0], "00000000", *p[2:]], id="unknown key"),
        pytest.param(lambda p: p[:3], id="no signature"),
        pytest.param(lambda p: [*p, "x"], id="extra part"),
    ],
)
def test_a_tampered_token_is_refused_as_invalid(keys: Path, clock: Clock, tamper: object) -> None:
    tokens = tokens_at(keys, clock)
    parts = mint(tokens).split(".")
    forged = ".".join(tamper(parts))  # type: ignore[operator]
    assert refusal(tokens, forged) == Reason.TOKEN_INVALID


def test_claims_rewritten_and_resigned_with_another_key_are_refused(keys: Path, tmp_path: Path, clock: Clock) -> None:
    ours = tokens_at(keys, clock)
    theirs = tokens_at(tmp_path / "other.json", clock)
    assert refusal(ours, mint(theirs)) == Reason.TOKEN_INVALID


def test_garbage_and_oversized_tokens_are_refused(keys: Path, clock: Clock) -> None:
    tokens = tokens_at(keys, clock)
    for token in ("", "sst1", "sst1....", "sst1.zz.zz.zz", "salon_0123456789ab_secret", "sst1." + "a" * 5000):
        assert refusal(tokens, token) == Reason.TOKEN_INVALID


def test_the_keys_file_is_made_private_and_a_readable_one_is_refused(keys: Path, clock: Clock) -> None:
    tokens_at(keys, clock)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    keys.chmod(0o644)
    with pytest.raises(InvalidArgument) as caught:
        tokens_at(keys, clock)
    assert caught.value.reason == Reason.INVALID_CONFIG


def test_a_broken_keys_file_stops_the_start(keys: Path, clock: Clock) -> None:
    fd = os.open(keys, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"keys": [{"id": "short", "secret": "c2VjcmV0", "created": 1}]}')
    os.close(fd)
    with pytest.raises(InvalidArgument):
        tokens_at(keys, clock)


def test_rotation_signs_with_a_new_key_and_old_tokens_verify_until_they_expire(keys: Path, clock: Clock) -> None:
    tokens = tokens_at(keys, clock, rotate_s=600, max_ttl_s=3600)
    old = mint(tokens, ttl_s=3600)
    old_key = old.split(".")[1]
    clock.now += 600
    new = mint(tokens, ttl_s=3600)
    assert new.split(".")[1] != old_key
    assert len(KeyFile(keys).read()) == 2
    tokens.verify(old)
    tokens.verify(new)
    # Once every token the retired key signed has expired (max_ttl_s after it stopped signing), it is dropped.
    clock.now += 3600 + 61
    mint(tokens)
    assert old_key not in {k.key_id for k in KeyFile(keys).read()}
    assert refusal(tokens, old) == Reason.TOKEN_INVALID


def test_another_gateway_sharing_the_keys_verifies_a_token_signed_after_it_rotated(keys: Path, clock: Clock) -> None:
    first = tokens_at(keys, clock, rotate_s=DAY)
    second = tokens_at(keys, clock, rotate_s=DAY)
    clock.now += DAY
    token = mint(first)  # rotates the file
    assert second.verify(token).tenant_id == "acme"  # an unknown key id makes it read the file again at once


def test_user_tokens_and_user_labels() -> None:
    assert check_user("Alice Example") == "Alice Example"
    for bad in ("a" * 129, "line\nbreak", "\x00"):
        with pytest.raises(InvalidArgument) as caught:
            check_user(bad)
        assert caught.value.reason == Reason.BAD_TOKEN_USER


def test_a_user_token_names_no_session(keys: Path, clock: Clock) -> None:
    tokens = tokens_at(keys, clock)
    token, _ = tokens.mint("acme", "", user="alice", rights={Right.CREATE, Right.SEND}, ttl_s=60)
    claims = tokens.verify(token)
    assert claims.is_user_token and claims.user == "alice"
