"""The engine under test, as an operator runs it: ``salon serve`` processes on one data directory.

The main process (``salon serve``) owns the embedded nats-server, local Ray (session hosts and the batch
writer) and a gateway; extra gateways are ``salon serve --gateway-only`` processes on the same deployment.
Each process starts in a session of its own, and the suite only ever signals processes it started or their
descendants (found through /proc from the pids it holds), never processes matched by name machine-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TARGET_LINE = re.compile(r"gRPC gateway on (\S+)")
ROLES = {"host": "ray::HostActor", "writer": "ray::WriterActor", "nats": "nats-server"}
"""What a process's command line starts with, per role (Ray names its actor processes ``ray::<Class>``)."""


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state) of every process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of ``pid``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and table[child][1] != "Z":
                found.add(child)
                todo.append(child)
    return found


def alive(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` still running (zombies do not count)."""
    table = _proc_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def cmdline(pid: int) -> str:
    """A process's command line (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Wait until none of ``pids`` runs; returns those still running after ``timeout_s``."""
    pids = set(pids)
    deadline = time.monotonic() + timeout_s
    while (left := alive(pids)) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls /proc
        await asyncio.sleep(0.05)
    return left


@dataclass
class EngineSettings:
    """How the engine under test is configured (``SALON_*`` variables on top of a clean environment)."""

    data_dir: Path
    env: Mapping[str, str]
    log_dir: Path


@dataclass
class Serve:
    """One ``salon serve`` process and what it said."""

    proc: asyncio.subprocess.Process
    log_path: Path
    target: str = ""
    gateway_only: bool = False
    known: set[int] = field(default_factory=set)
    """Every pid seen under this process (kept, so a killed parent's orphans are still found)."""

    @property
    def pid(self) -> int:
        """The serve process's pid."""
        return self.proc.pid

    def pids(self) -> set[int]:
        """The process and its live descendants (and earlier-seen ones still alive)."""
        self.known |= {self.pid} | descendants(self.pid)
        self.known = alive(self.known) | descendants(self.pid)
        return set(self.known)

    def role(self, name: str) -> list[int]:
        """Live processes of a role (``host``, ``writer``, ``nats``) under this process."""
        prefix = ROLES[name]
        return sorted(p for p in self.pids() if cmdline(p).startswith(prefix) or f"/{prefix} " in cmdline(p))

    async def kill(self, timeout_s: float = 30.0) -> float:
        """SIGKILL the process and all its descendants at once; returns seconds until all were gone."""
        started = time.monotonic()
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        left = await wait_gone(pids, timeout_s)
        if left:
            raise RuntimeError(f"processes survived SIGKILL: {sorted(left)}")
        return time.monotonic() - started

    async def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the engine drains and stops), SIGKILL after ``timeout_s``; the exit status (None: killed)."""
        pids = self.pids()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                await self.kill()
                return None
        left = await wait_gone(pids, 30.0)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await wait_gone(left, 10.0)
        return self.proc.returncode


async def start_serve(
    settings: EngineSettings, name: str, *, gateway_only: bool = False, nats_url: str = "", timeout_s: float = 180.0
) -> Serve:
    """Start ``salon serve`` (or a ``--gateway-only`` one) and wait until it says where it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS", "ANTHROPIC_"))}
    env.update(settings.env)
    args = ["serve", "--port", "0", "--data-dir", str(settings.data_dir)]
    if gateway_only:
        args.append("--gateway-only")
        env["SALON_NATS_URL"] = nats_url
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{name}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "salon.engine.cli",
            *args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    serve = Serve(proc, log_path, gateway_only=gateway_only)
    offset = log_path.stat().st_size if log_path.exists() else 0
    deadline = time.monotonic() + timeout_s
    while True:
        serve.pids()
        text = log_path.read_text(errors="replace")[offset:] if log_path.exists() else ""
        found = TARGET_LINE.search(text)
        if found:
            serve.target = found.group(1)
            break
        if proc.returncode is not None or time.monotonic() > deadline:
            await serve.kill()
            raise RuntimeError(f"salon serve ({name}) did not start; see {log_path}")
        await asyncio.sleep(0.1)
    await wait_serving(serve.target, 30.0)
    return serve


async def wait_serving(target: str, timeout_s: float) -> bool:
    """Wait until ``target``'s health service says SERVING; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            await asyncio.sleep(0.1)
    return False


def engine_nats_url(data_dir: Path) -> str:
    """The URL (with the engine's credentials) of the embedded nats-server running on ``data_dir``."""
    run = data_dir / "nats" / "run"
    pid = int((run / "nats-server.pid").read_text())
    ports = next(run.glob(f"*_{pid}.ports"))
    address = str(json.loads(ports.read_text())["nats"][0])
    credentials = json.loads((data_dir / "nats" / "credentials.json").read_text())
    scheme, _, rest = address.partition("://")
    return f"{scheme}://{credentials['user']}:{credentials['password']}@{rest}"


class Tmpfs:
    """A small tmpfs for the data directory (to fill it up), when this process may mount one (root)."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False
        self.why_not = ""

    def mount(self) -> bool:
        """Mount it; False (with ``why_not``) when this process cannot."""
        if os.geteuid() != 0:
            self.why_not = "not running as root: no tmpfs can be mounted"
            return False
        if shutil.which("mount") is None:
            self.why_not = "no mount command"
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.why_not = f"mounting a tmpfs failed: {done.stderr.strip()}"
            return False
        self.mounted = True
        return True

    def fill(self) -> Path:
        """Take all its free space with a filler file; returns the file."""
        filler = self.path / "filler"
        free = shutil.disk_usage(self.path).free
        # Unbuffered: a buffered file would try to write its last bytes again on close, and raise there.
        with open(filler, "wb", buffering=0) as fh:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fh.fileno(), 0, free)
            # fallocate may leave a little: write until the disk says no.
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
        return filler

    def unmount(self) -> None:
        """Unmount it (idempotent)."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
