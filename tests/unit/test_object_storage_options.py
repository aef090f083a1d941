"""Object-storage settings become LanceDB storage options; lost commit races are retried, other failures not."""

from __future__ import annotations

import pytest

from salon.engine.config import Config
from salon.storage.errors import InvalidArgument
from salon.storage.lance.connection import is_commit_conflict, is_object_store, retry_conflicts


def test_storage_settings_become_lancedb_storage_options() -> None:
    config = Config.load(
        env={
            "SALON_STORAGE_URI": "s3://bucket/prefix",
            "SALON_STORAGE_ENDPOINT": "http://127.0.0.1:9000",
            "SALON_STORAGE_REGION": "us-east-1",
            "SALON_STORAGE_ACCESS_KEY_ID": "key",
            "SALON_STORAGE_SECRET_ACCESS_KEY": "secret",
            "SALON_STORAGE_ALLOW_HTTP": "true",
            "SALON_STORAGE_OPTIONS": "timeout=60s, aws_session_token=tok",
        }
    )
    assert config.lancedb_location == "s3://bucket/prefix"
    assert config.lancedb_storage_options() == {
        "endpoint": "http://127.0.0.1:9000",
        "region": "us-east-1",
        "aws_access_key_id": "key",
        "aws_secret_access_key": "secret",
        "allow_http": "true",
        "timeout": "60s",
        "aws_session_token": "tok",
    }
    assert "secret" not in repr(config)


def test_a_local_directory_needs_no_options() -> None:
    config = Config(data_dir="/tmp/x")
    assert config.lancedb_storage_options() == {}
    assert not is_object_store(config.lancedb_location)
    assert is_object_store("s3://b/p") and is_object_store("GS://b/p") and is_object_store("az://c/p")


@pytest.mark.parametrize("options", ["timeout", "=x", "a=1,,b"])
def test_malformed_storage_options_are_refused(options: str) -> None:
    with pytest.raises(InvalidArgument):
        Config(storage_options=options)


@pytest.mark.parametrize("replicas", ["0", "6", "three", ""])
def test_nats_replicas_must_be_auto_or_a_count(replicas: str) -> None:
    with pytest.raises(InvalidArgument):
        Config(nats_replicas=replicas)
    assert Config(nats_replicas="3").nats_replicas == "3"


async def test_a_lost_commit_race_is_run_again() -> None:
    calls = 0

    async def commit() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("lance error: Retryable commit conflict for version 7: another writer won")
        return "done"

    assert await retry_conflicts(commit, what="test") == "done"
    assert calls == 3


async def test_other_failures_and_the_last_conflict_propagate() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("lance error: LanceError(IO): Not a directory")

    with pytest.raises(RuntimeError, match="Not a directory"):
        await retry_conflicts(broken, what="test")
    assert calls == 1

    async def always_conflicting() -> None:
        raise RuntimeError("Commit conflict for version 8: Failed to commit the transaction after 5 retries.")

    with pytest.raises(RuntimeError, match="Commit conflict"):
        await retry_conflicts(always_conflicting, what="test", attempts=2)
    assert is_commit_conflict(RuntimeError("Incompatible transaction"))
    assert not is_commit_conflict(ValueError("commit conflict"))
