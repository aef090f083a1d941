"""The Ray the engine starts itself is a single-machine Ray on loopback; a Ray it joins is left as it is.
(tests/integration/test_serve.py checks the listeners of a real engine.)"""

from __future__ import annotations

import os

import pytest

from salon.engine.config import Config
from salon.engine.ray_start import prepare_ray_environment, ray_environment


def test_an_embedded_ray_runs_in_single_machine_mode() -> None:
    assert ray_environment(Config()) == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_a_joined_cluster_is_left_as_it_is() -> None:
    assert ray_environment(Config(ray_address="10.0.0.5:6379")) == {}


def test_json_logs_keep_ray_from_decorating_worker_lines() -> None:
    env = ray_environment(Config(log_format="json"))
    assert env["RAY_DISABLE_WORKER_LOG_PREFIX"] == "1" and env["RAY_DEDUP_LOGS"] == "0"


def test_settings_ray_read_at_import_are_set_in_this_process_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private import ray_constants, ray_logging

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("RAY_")})
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setattr(ray_constants, "RAY_DISABLE_WORKER_LOG_PREFIX", False)
    monkeypatch.setattr(ray_constants, "RAY_DEDUP_LOGS", True)
    monkeypatch.setattr(ray_logging, "RAY_DEDUP_LOGS", True)
    prepare_ray_environment(Config(log_format="json"))
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.RAY_DISABLE_WORKER_LOG_PREFIX is True
    assert ray_logging.RAY_DEDUP_LOGS is False
    # With cluster mode off, Ray takes loopback as the node's address (no probe of a public address).
    from ray._private import services

    assert services.get_node_ip_address() == "127.0.0.1"
