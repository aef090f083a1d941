"""Shared test configuration: integration tests are marked by their folder, and the longest files run first."""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "test_fault_suite.py",
    "test_serve.py",
    "test_ray_cluster.py",
    "test_nats_restart.py",
    "test_tools.py",
    "test_nats_cluster.py",
    "test_delivery.py",
)
"""Files that take a minute or more (their own processes, real faults). ``make test`` spreads files over pytest-xdist
workers in collection order; started last, one of these would leave the other workers idle while it runs."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
