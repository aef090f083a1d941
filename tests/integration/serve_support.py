"""Helpers of the tests that run `salon serve` as a subprocess: start it in a session of its own, find the
processes it owns (its session and descendants), their listening sockets, and clean up after it."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, session id) of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces; the fields after it are space separated.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, _pgrp, session = fields[0], int(fields[1]), fields[2], int(fields[3])
    if state == "Z":  # a zombie holds nothing and is gone as far as the test is concerned
        return None
    return name, ppid, session


def clean_env() -> dict[str, str]:
    """This environment without Salon settings or a Ray address, and with this interpreter's scripts (salon)
    first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def engine_processes(root: int) -> dict[int, str]:
    """The processes the engine started as ``root`` owns: its session's members and its descendants (the
    embedded nats-server runs in a session of its own), by pid with their names."""
    stats = {pid: stat for pid in _all_pids() if (stat := stat_of(pid)) is not None}
    found = {pid for pid, (_, _, session) in stats.items() if session == root}
    if root in stats:
        found.add(root)
    grew = True
    while grew:
        children = {pid for pid, (_, ppid, _) in stats.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return {pid: stats[pid][0] for pid in found}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    return stat_of(pid) is not None


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds open."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # /proc/net/tcp{,6} print addresses as 32-bit words in host (little-endian) byte order.
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    return ipaddress.ip_address(b"".join(words))


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Every TCP socket listening on this machine: inode → (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A":  # TCP_LISTEN
                address, port = local.split(":")
                found[inode] = (str(_address(address)), int(port, 16))
    return found


def is_loopback(address: str) -> bool:
    """Whether ``address`` (IPv4, IPv6 or IPv4-mapped IPv6) is a loopback address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


async def read_target(proc: asyncio.subprocess.Process, timeout_s: float, seen: list[str] | None = None) -> str:
    """The gateway's address, from the line `salon serve` prints once it serves (lines read go to ``seen``)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())
        if not line:
            break
        if seen is not None:
            seen.append(line.decode())
        match = re.search(r"gRPC gateway on ([^\s\"]+)", line.decode())
        if match:
            return match.group(1)
    raise AssertionError("salon serve never said where it listens")


async def serve(data_dir: Path, *args: str, cwd: Path | None = None, **settings: str) -> asyncio.subprocess.Process:
    """`salon serve --port 0 --data-dir DATA_DIR ARGS…` with ``settings`` as environment (SALON_* of the caller's
    environment left out), in a session of its own."""
    env = clean_env()
    env.update(settings)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
        cwd=cwd or ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # the engine and everything it starts are told apart from the rest by it
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Clean-up, not a check: stop the engine (SIGTERM, then SIGKILL) and whatever of its session is left."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    deadline = time.monotonic() + 10
    left = engine_processes(proc.pid)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline
        left = engine_processes(proc.pid)
    for pid in left:
        stat = stat_of(pid)
        if stat is not None and stat[2] == proc.pid:  # still a member of the engine's session: ours
            os.kill(pid, signal.SIGKILL)


async def wait_gone(pids: set[int], what: str) -> None:
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{what}: still running {sorted(p for p in pids if alive(p))}"
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline
