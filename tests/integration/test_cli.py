"""The commands a new user runs, as subprocesses, and the client package's independence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "ANTHROPIC_", "RAY_ADDRESS"))}
    return subprocess.run(
        [sys.executable, "-m", "salon.engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_salon_demo_streams_a_conversation_and_exits_zero(tmp_path: Path) -> None:
    result = _run("demo", "--data-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "offline responder" in out
    for label in ("travel", "cooking", "support"):
        assert f"[{label}] you>" in out
    assert out.count("completed") == 6
    assert "done" in out.splitlines()[-1]


def test_help_explains_every_command() -> None:
    result = _run("--help", timeout=60)
    assert result.returncode == 0
    for command in ("serve", "demo", "chat", "config"):
        assert command in result.stdout
    assert "SALON_" in result.stdout


def test_config_lists_every_setting() -> None:
    result = _run("config", "--markdown", timeout=60)
    assert result.returncode == 0
    assert "`SALON_GRPC_PORT`" in result.stdout and "`SALON_NATS_URL`" in result.stdout


def test_client_package_needs_only_grpcio_and_protobuf() -> None:
    meta = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())
    deps = sorted(d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["project"]["dependencies"])
    assert deps == ["grpcio", "protobuf"]
    probe = (
        "import sys, json; import salon.client, salon.client.chat, salon.v1.conversation_service_pb2_grpc; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    )
    assert not loaded & {"ray", "lancedb", "nats", "pyarrow", "engine", "actors", "storage", "otel", "anthropic"}
