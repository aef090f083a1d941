"""Start-up: how long ``salon --help`` takes, how long ``salon serve`` takes to answer SERVING, and where an
engine's start goes.

    .venv/bin/python -m bench.bench_startup --runs 5 --json bench_startup.json

Three measurements, each repeated ``--runs`` times in fresh processes (medians reported, since the machine
may be shared):

- ``help``: wall time of ``salon --help`` (interpreter start, imports, argparse).
- ``serve``: from spawning ``salon serve --port 0`` on an empty data directory to the line that names the
  gateway's address, which the command prints once health says SERVING, and the CPU time the engine's
  processes had spent by then (less sensitive to a busy machine than wall time); ``--settle`` seconds later
  the memory (RSS and PSS) of every process of its tree, by kind (gateway, host actors, writer, Ray's own
  daemons, nats-server); then ``--turns`` turns, each on a new session, timed to the first token (the first
  pays what the engine loads on first use); then SIGTERM and the time to exit.
- ``phases``: an engine started in a child process of this benchmark with its parts timed (each part's
  start offset and duration from the start of ``Engine.start``; parts that run concurrently overlap).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ProcessSample, by_kind, load_average, non_negative_int, positive_int, run_header, sample_tree

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    # The defaults a new user gets: no SALON_* or Ray address from the caller's shell.
    return {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}


def measure_help() -> float:
    """Seconds ``salon --help`` takes."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "salon.engine.cli", "--help"]
    subprocess.run(command, env=_env(), cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def cpu_seconds(session: int) -> float:
    """CPU time (user + system) spent so far by the processes of ``session`` and their descendants, with the
    children they have reaped: the work a start did, which a busy machine stretches in wall time but not here."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()
    owned = {pid for pid, fields in stats.items() if int(fields[3]) == session}
    grew = True
    while grew:
        children = {pid for pid, fields in stats.items() if int(fields[1]) in owned} - owned
        owned |= children
        grew = bool(children)
    # Fields after the name: utime, stime, cutime, cstime are the 12th to 15th.
    return sum(sum(int(v) for v in stats[pid][11:15]) for pid in owned) / ticks


def _drain_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


async def _first_turns(target: str, turns: int) -> list[dict[str, float]]:
    """Time to the first token and to the end of the first ``turns`` turns, each of a new session (the first one
    pays whatever the engine loads on first use)."""
    from salon.client import SalonClient

    out: list[dict[str, float]] = []
    async with SalonClient(target) as client:
        await client.wait_ready(30.0)
        for _ in range(turns):
            session = await client.create_session()
            start = time.perf_counter()
            first = None
            async for event in session.send("hello, what can you do?"):
                if first is None and event.WhichOneof("kind") == "delta":
                    first = time.perf_counter() - start
            out.append({"ttft_s": first if first is not None else float("nan"), "turn_s": time.perf_counter() - start})
    return out


def _memory(samples: list[ProcessSample]) -> dict[str, Any]:
    return {
        "processes": len(samples),
        "rss_mib": sum(s.rss_bytes for s in samples) / 2**20,
        "pss_mib": sum(s.pss_bytes for s in samples) / 2**20,
        "by_kind": by_kind(samples),
    }


def measure_serve(data_dir: Path, timeout_s: float = 300.0, *, settle_s: float = 5.0, turns: int = 2) -> dict[str, Any]:
    """Seconds from spawning ``salon serve`` to SERVING; the memory of its process tree ``settle_s`` later (idle);
    the first ``turns`` turns (each on a new session) and the memory after them; then SIGTERM and the time to
    exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "salon.engine.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    # Read on a thread, so the engine never blocks on a full pipe while the benchmark measures it.
    reader = threading.Thread(target=_drain_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    serving = None
    target = ""
    other_lines = 0
    try:
        while serving is None:
            try:
                line = lines.get(timeout=max(timeout_s - (time.perf_counter() - start), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            found = re.search(r"gRPC gateway on (\S+)", line)
            if found:
                serving = time.perf_counter() - start
                cpu = cpu_seconds(proc.pid)
                target = found.group(1)
                break
            other_lines += 1
        if serving is None:
            raise RuntimeError("salon serve never reported SERVING")
        time.sleep(settle_s)
        idle = _memory(sample_tree(proc.pid))
        cpu_idle = cpu_seconds(proc.pid)
        first = asyncio.run(_first_turns(target, turns)) if turns else []
        after_turns = _memory(sample_tree(proc.pid)) if turns else {}
        stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        return {
            "serving_s": serving,
            "cpu_s_at_serving": cpu,
            "cpu_s_after_settle": cpu_idle,
            "stop_s": time.perf_counter() - stop,
            "lines_before_serving": other_lines,
            "idle": idle,
            "first_turns": first,
            "after_turns": after_turns,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


PHASES: list[tuple[str, str, str]] = [
    # (label, module, attribute path): wrapped where it exists, so the benchmark survives refactors.
    ("salon.otel.setup", "salon.engine.app", "salon.otel.setup"),
    ("nats-server start", "salon.engine.app", "EmbeddedNats.start"),
    ("ensure streams", "salon.engine.app", "ensure_bus"),
    ("ensure ledger", "salon.engine.app", "ensure_ledger"),
    ("ray init (its own thread)", "salon.engine.ray_start", "ensure_ray"),
    ("wait for ray", "salon.engine.ray_start", "RayStart.started"),
    ("transcript store open", "salon.engine.app", "TranscriptStore.open"),
    ("knowledge base open", "salon.engine.app", "KnowledgeBase.open"),
    ("hosts start", "salon.engine.app", "HostGroup.start"),
    ("writer start", "salon.engine.app", "WriterHandle.start"),
]


def _wrap(owner: Any, name: str, label: str, marks: list[tuple[str, float, float]], t0: list[float]) -> None:
    original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if original is None:
        return
    is_classmethod = isinstance(original, classmethod)
    func: Callable[..., Any] = original.__func__ if is_classmethod else original

    if asyncio.iscoroutinefunction(func):

        @functools.wraps(func)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                marks.append((label, start - t0[0], time.perf_counter() - start))

        wrapped: Any = timed_async
    else:

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                marks.append((label, start - t0[0], time.perf_counter() - start))

        wrapped = timed
    setattr(owner, name, classmethod(wrapped) if is_classmethod else wrapped)


async def _phases_once(data_dir: Path) -> dict[str, Any]:
    import importlib

    start_import = time.perf_counter()
    app = importlib.import_module("salon.engine.app")
    from salon.engine.config import Config

    imported = time.perf_counter() - start_import
    marks: list[tuple[str, float, float]] = []
    t0 = [0.0]
    for label, module, path in PHASES:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is not None:
            _wrap(owner, name, label, marks, t0)
    config = Config.load(None).replace(data_dir=str(data_dir), grpc_port=0)
    engine = app.Engine(config)
    t0[0] = time.perf_counter()
    await engine.start()
    total = time.perf_counter() - t0[0]
    await engine.close()
    return {
        "import_engine_app_s": imported,
        "start_s": total,
        "phases": [{"phase": m[0], "at_s": m[1], "took_s": m[2]} for m in sorted(marks, key=lambda m: m[1])],
    }


def measure_phases(data_dir: Path) -> dict[str, Any]:
    """One engine start in a fresh process, its parts timed."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_startup", "--phases-once", str(data_dir)],
        env=_env(),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _print_memory(serves: list[dict[str, Any]], settle_s: float) -> None:
    """The idle memory of the engine's process tree by kind of process (the median run's), and the first turns."""
    rss = [s["idle"]["rss_mib"] for s in serves]
    pss = [s["idle"]["pss_mib"] for s in serves]
    cpu = [s["cpu_s_after_settle"] for s in serves]
    print(
        f"idle {settle_s:.0f} s after SERVING: RSS median {_median(rss):.0f} MiB, PSS median {_median(pss):.0f} MiB "
        f"in {serves[0]['idle']['processes']} processes; CPU spent by then: median {_median(cpu):.2f} s"
    )
    median_run = sorted(serves, key=lambda s: s["idle"]["rss_mib"])[len(serves) // 2]
    for kind, row in median_run["idle"]["by_kind"].items():
        print(
            f"  {kind:<30} x{row['processes']:<2.0f} RSS {row['rss_mib']:7.0f} MiB  PSS {row['pss_mib']:7.0f} MiB  "
            f"CPU {row['cpu_s']:6.2f} s"
        )
    turns = len(serves[0]["first_turns"])
    for i in range(turns):
        ttft = [s["first_turns"][i]["ttft_s"] for s in serves]
        took = [s["first_turns"][i]["turn_s"] for s in serves]
        print(
            f"turn {i + 1} after start (new session): TTFT median {_median(ttft) * 1000:.0f} ms, whole turn "
            f"{_median(took) * 1000:.0f} ms"
        )
    if turns:
        after = [s["after_turns"]["rss_mib"] for s in serves]
        after_pss = [s["after_turns"]["pss_mib"] for s in serves]
        print(f"after those turns: RSS median {_median(after):.0f} MiB, PSS median {_median(after_pss):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=5, help="repetitions of each measurement")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--skip-phases", action="store_true", help="only --help and serve")
    parser.add_argument("--skip-help", action="store_true", help="do not time salon --help")
    parser.add_argument(
        "--settle", type=float, default=5.0, metavar="S", help="seconds after SERVING before the idle memory is read"
    )
    parser.add_argument(
        "--turns", type=non_negative_int, default=2, help="turns (each on a new session) timed after the idle reading"
    )
    parser.add_argument("--phases-once", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases_once:
        print(json.dumps(asyncio.run(_phases_once(Path(args.phases_once)))))
        return
    load_before = load_average()
    helps = [] if args.skip_help else [measure_help() for _ in range(args.runs)]
    if helps:
        print(f"salon --help: median {_median(helps):.2f} s ({', '.join(f'{h:.2f}' for h in helps)})")
    serves: list[dict[str, Any]] = []
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="salon-bench-startup-") as tmp:
        for i in range(args.runs):
            serves.append(measure_serve(Path(tmp) / f"serve{i}", settle_s=args.settle, turns=args.turns))
        serving = [s["serving_s"] for s in serves]
        stops = [s["stop_s"] for s in serves]
        cpu = [s["cpu_s_at_serving"] for s in serves]
        print(
            f"salon serve to SERVING: median {_median(serving):.2f} s ({', '.join(f'{s:.2f}' for s in serving)}); "
            f"CPU spent by then: median {_median(cpu):.2f} s; SIGTERM to exit: median {_median(stops):.2f} s"
        )
        _print_memory(serves, args.settle)
        if not args.skip_phases:
            for i in range(args.runs):
                phases.append(measure_phases(Path(tmp) / f"phases{i}"))
    if phases:
        print(f"import engine.app: median {_median([p['import_engine_app_s'] for p in phases]):.2f} s")
        print(f"Engine.start: median {_median([p['start_s'] for p in phases]):.2f} s")
        labels = [label for label, _, _ in PHASES]
        for label in labels:
            at = [m["at_s"] for p in phases for m in p["phases"] if m["phase"] == label]
            took = [m["took_s"] for p in phases for m in p["phases"] if m["phase"] == label]
            if took:
                print(f"  {label:<24} at {_median(at):6.2f} s  took {_median(took):6.2f} s")
    load_after = load_average()
    print(f"load average before: {load_before}; after: {load_after}")
    if args.json:
        command = "python -m bench.bench_startup " + " ".join(sys.argv[1:])
        results = {
            **run_header(command, load_before, load_after),
            "help_s": helps,
            "serve": serves,
            "phases": phases,
        }
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
