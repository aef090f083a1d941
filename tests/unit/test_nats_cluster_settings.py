"""How the engine reads a NATS cluster: its servers from the URL, the replicas from what the server tells."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from salon.storage import redact_url
from salon.storage.jetstream.client import cluster_size, server_urls, stream_replicas


def _connection(info: dict[str, Any]) -> Any:
    return SimpleNamespace(_server_info=info)


def test_a_url_may_list_several_servers() -> None:
    assert server_urls("nats://a:4222, nats://b:4222,,nats://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    assert server_urls("nats://a:4222") == ["nats://a:4222"]


def test_every_password_of_a_server_list_is_redacted() -> None:
    shown = redact_url("nats://engine:hunter2@a:4222,nats://engine:hunter3@b:4222")
    assert "hunter" not in shown
    assert shown == "nats://engine:***@a:4222,nats://engine:***@b:4222"


@pytest.mark.parametrize(
    ("info", "size", "replicas"),
    [
        ({}, 1, 1),
        ({"connect_urls": ["a:1"]}, 1, 1),  # no cluster name: a lone server
        ({"cluster": "c", "connect_urls": ["a:1", "b:1"]}, 2, 1),
        ({"cluster": "c", "connect_urls": ["a:1", "b:1", "c:1"]}, 3, 3),
        ({"cluster": "c", "connect_urls": ["a:1", "b:1", "c:1", "d:1", "e:1"]}, 5, 3),
        ({"cluster": "c", "connect_urls": []}, 1, 1),  # servers that do not advertise themselves
    ],
)
def test_auto_replicas_follow_the_cluster_size(info: dict[str, Any], size: int, replicas: int) -> None:
    nc = _connection(info)
    assert cluster_size(nc) == size
    assert stream_replicas(nc) == replicas


def test_a_configured_replica_count_wins() -> None:
    assert stream_replicas(_connection({}), "3") == 3
    assert stream_replicas(_connection({"cluster": "c", "connect_urls": ["a", "b", "c"]}), "1") == 1
