"""Starting the servers under test, each in a process group of its own on a free port, and waiting until
they answer: ``salon serve`` (scripted provider, no model delay) and ``langgraph dev`` (the in-memory API
server) serving :mod:`bench.peer.lg_graph`. Also makes the peer venv LangGraph runs in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.peer.procs import Spawned, free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = HERE / "requirements.txt"
DEFAULT_PEER_VENV = HERE / ".venv"

# Nothing leaves the machine: no LangSmith tracing, no CLI analytics; the Ray cluster is always a new local one.
_OFFLINE = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
_DROPPED = ("RAY_ADDRESS", "SALON_RAY_ADDRESS", "SALON_NATS_URL", "SALON_CONFIG", "LANGSMITH_API_KEY")


def say(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def base_env() -> dict[str, str]:
    """This process's environment without what would point a server elsewhere, plus the offline switches."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith("SALON_")}
    env.update(_OFFLINE)
    return env


def ensure_peer_venv(venv: Path) -> Path:
    """The peer venv's Python, creating the venv from ``requirements.txt`` when it lacks LangGraph."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import langgraph, langgraph_api, langgraph_cli, langgraph_sdk"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    say(f"creating the peer venv ({venv.name}) from {REQUIREMENTS.relative_to(REPO)} …")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)
    subprocess.run(probe, check=True)
    return python


def _wait(what: Spawned, ready: Callable[[], bool], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not what.alive():
            raise RuntimeError(f"{what.name} exited during start-up:\n{what.log_tail()}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what.name} not ready within {deadline_s:.0f} s:\n{what.log_tail()}")


def start_salon(workdir: Path, *, tokens: int, memory: bool, deadline_s: float = 180.0) -> tuple[Spawned, str]:
    """``salon serve`` on embedded defaults with the scripted provider; memory on (the defaults) or off
    (no retrieval and no memory indexing, as ``bench.bench_turns --no-memory``). Returns it and its target."""
    port = free_port()
    env = base_env()
    env.update(
        SALON_DATA_DIR=str(workdir / "salon-data"),
        SALON_GRPC_PORT=str(port),
        SALON_MODEL_PROVIDER="scripted",
        SALON_SCRIPTED_TOKENS=str(tokens),
        SALON_SCRIPTED_FIRST_TOKEN_DELAY_S="0",
        SALON_SCRIPTED_TOKEN_DELAY_S="0",
    )
    if not memory:
        env.update(SALON_LONG_TERM_MEMORY="false", SALON_RETRIEVAL_TOP_K="0")
    salon = shutil.which("salon", path=str(Path(sys.executable).parent)) or "salon"
    server = Spawned("salon serve", [salon, "serve"], env=env, cwd=workdir, log=workdir / "salon-serve.log")
    announced = re.compile(r"gRPC gateway on \S+:" + str(port))

    def ready() -> bool:
        return bool(announced.search(server.log.read_text(errors="replace")))

    _wait(server, ready, deadline_s)
    return server, f"127.0.0.1:{port}"


def start_langgraph_dev(
    workdir: Path, peer_python: Path, *, tokens: int, deadline_s: float = 120.0
) -> tuple[Spawned, str]:
    """``langgraph dev`` (in-memory server, its defaults, no reload, no browser) serving the chat graph.
    Returns it and its base URL."""
    port = free_port()
    config = workdir / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"chat": f"{HERE / 'lg_graph.py'}:graph"}, "dependencies": ["."]}))
    env = base_env()
    env["PEER_TOKENS"] = str(tokens)
    cli = peer_python.parent / "langgraph"
    argv = [str(cli), "dev", "--port", str(port), "--no-reload", "--no-browser", "--config", str(config)]
    server = Spawned("langgraph dev", argv, env=env, cwd=workdir, log=workdir / "langgraph-dev.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait(server, ready, deadline_s)
    return server, url
