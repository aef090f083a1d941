"""The faults: what each does to the engine under test, and how the clients behave meanwhile.

A fault's run goes: clients start their closed loops; after a seeded random delay the fault is injected
(``inject``); when it has ended (``inject`` returns: the process is killed, stopped and continued, the disk
filled and freed, ...) the clients go on until each has completed a turn after it. Faults that need something
the machine may not offer (a tmpfs for the full disk) say why they are skipped.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.faults.clients import Policy

if TYPE_CHECKING:
    from bench.faults.suite import Run


@dataclass
class Fault:
    """One kind of fault. Subclasses override :meth:`inject` (and the policy and hooks they need)."""

    name: str
    what: str
    survives: str = ""
    """The README "What survives what" row it exercises (empty: a stream promise)."""
    policy: Policy = field(default_factory=Policy)
    gateway: bool = False
    """The clients use an extra ``--gateway-only`` gateway first (the one the fault kills)."""

    def skip_reason(self, run: Run) -> str:
        """Why this fault cannot run here (empty: it can)."""
        return ""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        """Do the fault; return when it has ended, with the moment (``time.monotonic()``) from which recovery is
        timed when that is not now (a killed engine: the kill, not the end of its restart)."""
        return None

    async def during(self, run: Run, rng: random.Random) -> None:
        """Runs beside the clients from the start of the run until they stop (extra load, duplicates)."""


class HostKill(Fault):
    """SIGKILL one session host while turns stream (Ray restarts it; its turns are redelivered)."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.signal_role("host", rng, "KILL")
        return None


class WriterKill(Fault):
    """SIGKILL the batch writer (Ray restarts it; its unacknowledged ledger entries are redelivered)."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.signal_role("writer", rng, "KILL")
        return None


class NatsKill(Fault):
    """SIGKILL the embedded nats-server (the engine restarts it on its file storage)."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.signal_role("nats", rng, "KILL")
        return None


class GroupKill(Fault):
    """SIGKILL the whole engine (the serve process and everything under it) and start it again on the same data
    directory; clients retry every turn by its idempotency key."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        return await run.suite.kill_and_restart()


class HostStop(Fault):
    """SIGSTOP one session host for longer than the turns' ack wait, then SIGCONT it."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        pid = await run.signal_role("host", rng, "STOP")
        try:
            await asyncio.sleep(run.suite.options.ack_wait_s * 1.5 + rng.uniform(0, 0.5))
        finally:
            run.suite.continue_process(pid)
        return None


class GatewayKill(Fault):
    """SIGKILL a gateway (a ``--gateway-only`` process) mid-stream; clients resume on another gateway."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.suite.kill_gateway()
        return None


class Disconnect(Fault):
    """Clients hang up mid-stream after a random number of events and resume after the last one they hold."""


class DiskFull(Fault):
    """Fill the data directory's disk (a small tmpfs) while turns run, then free the space."""

    def skip_reason(self, run: Run) -> str:
        return run.suite.tmpfs_unavailable

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.suite.fill_disk(run.suite.options.disk_full_s + rng.uniform(0, 0.5))
        return None  # recovery is timed from the moment the space came back


class Spike(Fault):
    """Ten times the run's clients arrive at once, past the hosts' admission limits, each retrying refusals."""

    async def inject(self, run: Run, rng: random.Random) -> float | None:
        await run.spike(rng)
        return None


class Duplicates(Fault):
    """Duplicate deliveries: a second SendTurn with the same key while the turn runs, and copies of turn
    messages put on the bus again (under a new message id) while they run and after they ended."""

    async def during(self, run: Run, rng: random.Random) -> None:
        await run.duplicates(rng)


class SlowConsumer(Fault):
    """One client stops reading its stream of large tokens for longer than the stream write timeout (it is cut
    off and resumes) while the others go on."""

    async def during(self, run: Run, rng: random.Random) -> None:
        await run.slow_reader(rng)


def catalogue() -> list[Fault]:
    """Every fault, in the order the suite runs them (the whole-engine kill last: it restarts everything)."""
    return [
        HostKill("host_kill", "SIGKILL a session host mid-stream", "a host process dies mid-turn"),
        WriterKill("writer_kill", "SIGKILL the batch writer", "the batch writer dies before a flush"),
        HostStop(
            "host_stop",
            "SIGSTOP a session host past the ack wait, then SIGCONT",
            "a session is activated elsewhere (host presumed dead)",
        ),
        GatewayKill(
            "gateway_kill",
            "SIGKILL a gateway mid-stream; clients resume on another",
            policy=Policy(resume=True),
            gateway=True,
        ),
        Disconnect("disconnect", "clients hang up mid-stream and resume", policy=Policy(disconnect_every=1)),
        Duplicates("duplicates", "the same turn sent twice at once; turn messages delivered again"),
        SlowConsumer("slow_consumer", "a client stops reading for longer than the write timeout"),
        Spike("spike", "10x the clients at once, past the admission limits"),
        NatsKill("nats_kill", "SIGKILL the embedded nats-server", "nats-server dies"),
        DiskFull("disk_full", "fill the data directory's disk, then free it", "the disk fills up"),
        GroupKill(
            "group_kill",
            "SIGKILL the whole engine and restart it on the same data directory",
            "the whole engine is killed",
            policy=Policy(resume=False),
        ),
    ]
