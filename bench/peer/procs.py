"""Processes the harness starts: free ports, starting commands in their own process group, the CPU of a
process tree read from /proc, and clean-up of everything started (standard library only, Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text (the machine may be shared)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so a server's grandchildren whose parent
    died stay in this process's tree, to be counted and cleaned up. False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _parents() -> dict[int, int]:
    """pid → parent pid of every live (non-zombie) process."""
    table: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] != "Z":
                table[int(entry.name)] = int(fields[1])
    return table


def descendants(root: int) -> set[int]:
    """Live descendants of ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and of its children it has waited for; 0 when gone.

    Counting waited-for children keeps a tree's total from dropping when one of its processes exits."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the command name: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _CLK_TCK


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant."""
    return sum(process_cpu_s(pid) for pid in {root, *descendants(root)})


def tree_cpu_by_name(root: int) -> dict[str, float]:
    """CPU seconds used so far by ``root`` and its live descendants, summed per process name (``comm``: for
    example ``salon``, ``nats-server``, ``raylet``, ``ray::HostActor``)."""
    totals: dict[str, float] = {}
    for pid in {root, *descendants(root)}:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        totals[name] = totals.get(name, 0.0) + process_cpu_s(pid)
    return totals


def self_cpu_s() -> float:
    """CPU seconds (user + system, every thread) this process has used."""
    times = os.times()
    return times.user + times.system


class Spawned:
    """A command started in a process group of its own, its output going to a log file; :meth:`stop` ends
    it and everything it started (idempotent)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        """True while the command itself runs."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the command's output (for error messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the command, wait up to ``grace_s`` for it to shut down, then SIGKILL whatever is left of its
        tree and process group."""
        tree = descendants(self.pid)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        tree |= descendants(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        kill_pids(tree)
        self.proc.wait()


def kill_pids(pids: set[int]) -> None:
    """SIGKILL each of ``pids`` that still runs (by pid: only processes this harness started are passed)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def reap_orphans(deadline_s: float = 5.0) -> list[int]:
    """Kill and reap every remaining descendant of this process (orphans adopted as subreaper); returns the pids
    that were still there. Call once every :class:`Spawned` has been stopped."""
    left = sorted(descendants(os.getpid()))
    kill_pids(set(left))
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not descendants(os.getpid()):
                break
            time.sleep(0.05)
    return left
