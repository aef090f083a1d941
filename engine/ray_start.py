"""Joining or starting Ray, on the caller's thread (:func:`ensure_ray`) or beside it (:class:`RayStart`).

A local Ray takes seconds to start, and most of that time its driver only waits: for the GCS, for its
dashboard head (started even without a dashboard, and waited for) and for the raylet to register. Started on a
thread of its own, it goes on while the engine imports its stack (LanceDB, gRPC) and starts NATS. Only what
needs Ray waits for it; nothing opens LanceDB before it is up (ray.init forks, see :func:`ensure_ray`).

This module imports Ray and nothing of the engine's actors or storage, so the command line can begin Ray before
it imports the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import signal
import sys
import threading
import warnings
from types import FrameType
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from salon.engine.config import Config

OBJECT_STORE_BYTES = 256 * 1024 * 1024
"""Salon passes no large objects through Ray; a small object store keeps a local start light."""
LOCAL_ACTOR_CAPACITY = 10_000
"""How many actors' worth of each ``ray_resources`` entry a Ray that Salon starts itself has: more than it runs."""

LOOPBACK = "127.0.0.1"

EMBEDDED_RAY_ENV: dict[str, str] = {
    # Ray runs "cluster mode" on Linux: it finds the node's address by routing towards a public address (a
    # message when there is no such route) and its servers listen on every interface. With it off (as Ray
    # does on macOS and Windows) the node's address is loopback, and the GCS, raylet, workers and agents
    # listen there alone. The embedded deployment is one machine, so nothing else needs to reach them.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
"""Environment of a Ray that Salon starts itself (set for this process and the processes Ray starts)."""

JSON_LOG_RAY_ENV: dict[str, str] = {
    # With JSON logs, the host and writer processes already print one JSON object per line naming their
    # process: Ray's "(HostActor pid=…)" prefix, colours and "[repeated 2x]" folding would break them.
    "RAY_DISABLE_WORKER_LOG_PREFIX": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_COLOR_PREFIX": "0",
}

# Ray reads these variables once, when its modules are imported (which may happen before the engine knows
# its configuration): the values this process already holds are set alongside the environment.
_IMPORTED_RAY_SETTINGS: dict[str, tuple[tuple[str, str, object], ...]] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": (("ray._private.ray_constants", "ENABLE_RAY_CLUSTER", False),),
    "RAY_DISABLE_WORKER_LOG_PREFIX": (("ray._private.ray_constants", "RAY_DISABLE_WORKER_LOG_PREFIX", True),),
    "RAY_DEDUP_LOGS": (
        ("ray._private.ray_constants", "RAY_DEDUP_LOGS", False),
        ("ray._private.ray_logging", "RAY_DEDUP_LOGS", False),
    ),
    "RAY_COLOR_PREFIX": (),
}


def ray_environment(config: Config) -> dict[str, str]:
    """The Ray environment variables Salon sets for ``config`` (see :func:`prepare_ray_environment`)."""
    env = dict(EMBEDDED_RAY_ENV) if not config.ray_address else {}
    if config.log_format == "json":
        env.update(JSON_LOG_RAY_ENV)
    return env


def prepare_ray_environment(config: Config) -> None:
    """Set Ray's environment for ``config`` in this process (inherited by every process Ray starts from here),
    before Ray starts: :func:`ensure_ray` calls it. Idempotent."""
    env = ray_environment(config)
    os.environ.update(env)
    for name in env:
        for module_name, attribute, value in _IMPORTED_RAY_SETTINGS.get(name, ()):
            module = sys.modules.get(module_name)
            if module is not None and hasattr(module, attribute):
                setattr(module, attribute, value)


_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
_WORKER_LOGGER = "ray._private.worker"


class _DropThreadNotice(logging.Filter):
    """Drops ray.init's notice that it set no SIGTERM handler off the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def _route_ray_logs() -> None:
    """Ray's driver-side messages go through the engine's own log handlers (text or JSON) at WARNING and
    above, instead of the plain handler Ray installs on import."""
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True
    ray_logger.setLevel(logging.WARNING)
    # A new local Ray turns token authentication on by default and says so at WARNING on every start; that is
    # the state Salon wants, so the notice is kept out of the engine's logs. (Setting RAY_AUTH_MODE instead
    # would only work before Ray is imported: Ray's core reads it once.)
    logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    # Started on a thread of its own (RayStart), ray.init cannot install its SIGTERM handler and says so at
    # WARNING; RayStart installs the same handler from the main thread.
    worker_logger = logging.getLogger(_WORKER_LOGGER)
    if not any(isinstance(f, _DropThreadNotice) for f in worker_logger.filters):
        worker_logger.addFilter(_DropThreadNotice())


def _ignore_lancedb_fork_notice() -> None:
    """ray.init fork+execs its head processes; LanceDB (imported by then, or being imported beside it) warns in
    each child before the exec, where its runtime is never used. A filter for that one message, kept (the
    scoped ``warnings.catch_warnings`` is not safe while another thread runs). Idempotent."""
    warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)


def ensure_ray(config: Config) -> bool:
    """Connect to ``config.ray_address`` or start a new Ray on this machine, listening on loopback only
    (no dashboard). Returns True when this call started Ray (so the caller shuts it down), False when Ray was
    already there.

    Without an address Ray is always started anew (``address="local"``): ``ray.init()`` alone would join a
    cluster started earlier with ``ray start`` on this machine (or named by ``RAY_ADDRESS``), someone else's
    perhaps, and run the engine's hosts there."""
    if ray.is_initialized():
        return False
    prepare_ray_environment(config)
    _route_ray_logs()
    kwargs: dict[str, Any] = {"log_to_driver": True, "logging_level": logging.WARNING, "configure_logging": False}
    if config.ray_address:
        address = config.ray_address
        node_ip = _loopback_host(address)
        if node_ip is not None:
            # A cluster reached over loopback runs on this machine: attach to the node at that address (Ray would
            # otherwise take this machine's routable address as the driver's node and find no raylet there).
            kwargs["_node_ip_address"] = node_ip
    else:
        address = "local"
        kwargs.update(
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address=LOOPBACK,
            # Salon's own Ray is one node: it takes every actor that needs the custom resources.
            resources={name: amount * LOCAL_ACTOR_CAPACITY for name, amount in config.ray_actor_resources().items()},
        )
    _ignore_lancedb_fork_notice()
    ray.init(address=address, **kwargs)
    return True


def _loopback_host(address: str) -> str | None:
    """The host of a ``host:port`` Ray address when it is a loopback IP address, else None."""
    host = address.rsplit(":", 1)[0] if "://" not in address else ""
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


def shutdown_ray() -> None:
    """Disconnect from Ray, stopping the local cluster if this process started it. Idempotent."""
    if ray.is_initialized():
        ray.shutdown()


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    sys.exit(signum)


class RayStart:
    """:func:`ensure_ray` on a thread of its own: :meth:`begin` starts it and returns at once, :meth:`started`
    waits for it, :meth:`close` shuts down the Ray it started.

    The thread lives as long as that Ray: Ray's processes are started to die with their parent, and on Linux
    "parent" is the thread that started them (``PR_SET_PDEATHSIG``). It shuts Ray down itself, when closed.
    Lifecycle: :meth:`begin` (idempotent, from the main thread), :meth:`started`, :meth:`close` (idempotent; also
    after a failed start, or one still running)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._outcome: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> RayStart:
        """Start Ray now, on its thread (idempotent); returns ``self``."""
        if self._thread is not None:
            return self
        if threading.current_thread() is threading.main_thread() and not ray.is_initialized():
            # What ray.init does on the main thread, and cannot from another: SIGTERM exits through SystemExit,
            # so a start it interrupts still closes what it started. (`salon serve` replaces it once serving.)
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _ignore_lancedb_fork_notice()
        # Running from now on: a waiter that gives up cannot cancel the start, whose outcome decides the shutdown.
        self._outcome.set_running_or_notify_cancel()
        self._thread = threading.Thread(target=self._run, name="salon-ray-start", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = ensure_ray(self._config)
        except BaseException as exc:  # handed to whoever waits, whatever it is
            self._outcome.set_exception(exc)
            return
        self._outcome.set_result(started)
        if started:
            self._stop.wait()
            shutdown_ray()

    async def started(self) -> bool:
        """Wait until Ray is up (beginning now unless begun): True when this start started Ray, False when Ray
        was already there. Raises what ray.init raised."""
        self.begin()
        return await asyncio.wrap_future(self._outcome)

    async def close(self) -> None:
        """Wait for the start to end, however it ends, and shut down the Ray it started. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(thread.join)
