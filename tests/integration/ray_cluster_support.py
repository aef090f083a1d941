"""A multi-node Ray cluster on this machine for tests: a head and worker nodes started with ``ray start``, each a
raylet of its own on its own loopback address (127.0.0.0/8, never 127.0.0.1, which Ray swaps for the machine's
routable address), every port picked free, token authentication with a token of the test's own (no file of the
user's is read or written), all under a temp dir. Each ``ray start`` runs in a session of its own, so a node is
stopped by ending its process group: nothing else on the machine (another Ray cluster) is touched."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 180.0


def free_port() -> int:
    """A port free on every interface now (Ray binds some of its servers to all of them)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _loopback_ips(count: int) -> list[str]:
    """``count`` distinct loopback addresses, none 127.0.0.1, chosen at random so two test runs rarely share one."""
    base = random.randrange(2, 250)
    third = random.randrange(0, 256)
    return [f"127.{third}.{base + i}.1" for i in range(count)]


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every process: its parent, its process group and its command line."""
    found: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # The command name (in parentheses) may hold spaces: the fields after it are split.
            fields = stat[stat.rindex(")") + 2 :].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def kill_node(group: int, marker: str) -> int:
    """SIGKILL every process of one node: its process group (raylet, agents; the group of its ``ray start``) and
    every descendant of those (Ray's workers, which put themselves in groups of their own). Nothing is signalled
    unless a process of the group names ``marker`` (the cluster's temp dir), so a reused group id is left alone.
    Returns how many processes were signalled."""
    processes = _processes()
    members = {pid for pid, (_, pgid, _) in processes.items() if pgid == group}
    if not any(marker in processes[pid][2] for pid in members):
        return 0
    grown = True
    while grown:
        children = {pid for pid, (ppid, _, _) in processes.items() if ppid in members} - members
        members |= children
        grown = bool(children)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(members)


@dataclass
class RayNodes:
    """A head and ``workers`` worker nodes. Lifecycle: :meth:`start`, :meth:`kill` (one node), :meth:`close`."""

    workers: int = 2
    cpus_per_node: int = 1
    worker_resources: dict[str, float] = field(default_factory=dict)
    """Custom resources of every worker node (the head has none)."""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="salon-ray-")))
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    groups: dict[str, int] = field(default_factory=dict)
    """Each node's process group, by its address."""
    address: str = ""
    head_ip: str = ""
    worker_ips: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process that talks to the cluster (nodes and drivers)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            # A dead node is noticed within seconds (the default waits about half a minute).
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="5000",
            RAY_health_check_failure_threshold="5",
            # A loaded machine (CI shares its cores) can take longer than Ray's 30 s for a raylet to register.
            RAY_raylet_start_wait_time_s="150",
        )
        return env

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
        try:
            return subprocess.Popen(
                [RAY, "start", *args, "--disable-usage-stats", "--num-cpus", str(self.cpus_per_node)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait(self, name: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait(timeout=START_TIMEOUT_S)
        if code != 0:
            tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ray start ({name}) failed with {code}:\n{tail}")

    def start(self) -> None:
        """Start the head, then the workers."""
        ips = _loopback_ips(1 + self.workers)
        self.head_ip, self.worker_ips = ips[0], ips[1:]
        port = free_port()
        common = ["--object-store-memory", str(80 * 1024 * 1024)]
        head = self._start(
            "head",
            [
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                self.head_ip,
                "--temp-dir",
                str(self.root / "t"),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(free_port()),
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--ray-client-server-port",
                str(free_port()),
                *common,
            ],
        )
        self.groups[self.head_ip] = head.pid  # its session's id: the node's processes stay in it after it exits
        self._wait("head", head)
        self.address = f"{self.head_ip}:{port}"
        # One after another: worker nodes on one machine share the head's session directory, and two starting
        # at once can pick the same names there (one raylet then fails to bind).
        for i, ip in enumerate(self.worker_ips):
            worker = self._start(
                f"worker{i}",
                [
                    "--address",
                    self.address,
                    "--node-ip-address",
                    ip,
                    "--dashboard-agent-listen-port",
                    str(free_port()),
                    *(["--resources", json.dumps(self.worker_resources)] if self.worker_resources else []),
                    *common,
                ],
            )
            self.groups[ip] = worker.pid
            self._wait(f"worker{i}", worker)

    def kill(self, ip: str) -> None:
        """Stop the node at ``ip`` at once, as a machine failure would (see :func:`kill_node`)."""
        kill_node(self.groups.pop(ip), str(self.root))

    def close(self) -> None:
        """Stop every node still running and remove the temp dir. Idempotent."""
        for ip in list(self.groups):
            self.kill(ip)
        shutil.rmtree(self.root, ignore_errors=True)
