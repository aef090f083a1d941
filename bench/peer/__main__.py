"""The peer benchmark's harness: ``python -m bench.peer --sessions 1,16,64``.

For every concurrency level, and within it every system in turn (so that the rows compared share the
machine's load of that moment), it starts the system afresh (a server on a free port in a process group of
its own), runs one driver process (:mod:`bench.peer.drive`) with N sessions in a closed loop, stops the
system and everything it started, and records the figures. Systems: ``library`` (LangGraph in-process),
``langgraph-dev`` (``langgraph dev``, over HTTP), ``salon`` (``salon serve`` on its defaults, memory on) and
``salon-nomem`` (long-term memory and retrieval off). Prints a Markdown table; ``--json`` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peer.procs import Spawned, become_subreaper, load_average, reap_orphans
from bench.peer.report import markdown_table
from bench.peer.servers import DEFAULT_PEER_VENV, REPO, ensure_peer_venv, say, start_langgraph_dev, start_salon
from bench.peer.stats import LevelResult

SYSTEMS = ("library", "langgraph-dev", "salon", "salon-nomem")


@dataclass
class Run:
    """One system at one level: its figures, or why it has none, and the machine's load around it."""

    system: str
    sessions: int
    load_before: str
    load_after: str = ""
    start_s: float = 0.0
    result: LevelResult | None = None
    failure: str = ""


def _int_list(raw: str) -> list[int]:
    try:
        values = [int(p) for p in raw.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {raw!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts must be integers of at least 1")
    return values


def _systems(raw: str) -> list[str]:
    names = [p.strip() for p in raw.split(",") if p.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"systems are among {', '.join(SYSTEMS)} (unknown: {unknown})")
    return names


def _drive(python: Path, system: str, label: str, sessions: int, args: argparse.Namespace, **extra: Any) -> LevelResult:
    """Run one driver process and read its JSON (its progress goes straight to this process's stderr)."""
    argv = [str(python), "-m", "bench.peer.drive", system, "--label", label, "--sessions", str(sessions)]
    argv += ["--warmup", str(args.warmup), "--turns", str(args.turns), "--tokens", str(args.tokens)]
    argv += ["--timeout", str(args.turn_timeout), "--idle", str(args.idle)]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    budget = args.turn_timeout * (args.warmup + args.turns) + 120
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the driver exited with {done.returncode}")
    return LevelResult.from_json(json.loads(done.stdout.strip().splitlines()[-1]))


def run_one(system: str, sessions: int, args: argparse.Namespace, peer_python: Path, workdir: Path) -> Run:
    """Start ``system``, drive it with ``sessions`` sessions, stop it; failures are recorded, not raised."""
    run = Run(system, sessions, load_average())
    say(f"[peer] {system}, {sessions} sessions (load {run.load_before}) …")
    server: Spawned | None = None
    started = time.perf_counter()
    try:
        if system == "library":
            run.result = _drive(peer_python, "library", system, sessions, args)
        elif system == "langgraph-dev":
            server, url = start_langgraph_dev(workdir, peer_python, tokens=args.tokens)
            run.start_s = time.perf_counter() - started
            run.result = _drive(peer_python, "langgraph-dev", system, sessions, args, url=url, server_pid=server.pid)
        else:
            server, target = start_salon(workdir, tokens=args.tokens, memory=system == "salon")
            run.start_s = time.perf_counter() - started
            python = Path(sys.executable)
            run.result = _drive(python, "salon", system, sessions, args, target=target, server_pid=server.pid)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        run.failure = f"{type(exc).__name__}: {exc}"[:2000]
        say(f"[peer] {system}, {sessions} sessions FAILED: {run.failure}")
    finally:
        if server is not None:
            server.stop()
        left = reap_orphans()
        if left:
            say(f"[peer] killed {len(left)} leftover processes of {system}: {left}")
    run.load_after = load_average()
    if run.result is not None:
        s = run.result.summary()
        say(
            f"[peer] {system}, {sessions} sessions: TTFT p50 {s['ttft_p50_ms']:.1f} ms, p90 {s['ttft_p90_ms']:.1f} ms, "
            f"{s['turns_per_s']:.1f} turns/s, CPU {s['cpu_ms_per_turn']:.1f} ms/turn, errors {s['errors']}"
        )
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when any run failed or any measured turn failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=_int_list, default=[1, 16, 64], help="concurrency levels (1,16,64)")
    parser.add_argument("--systems", type=_systems, default=list(SYSTEMS), help=f"among {','.join(SYSTEMS)}")
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured turns per session first (20: past Salon's 40-message window)"
    )
    parser.add_argument("--turns", type=int, default=10, help="measured turns per session (10)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens of every answer (64)")
    parser.add_argument("--turn-timeout", type=float, default=180.0, help="seconds a turn may take (180)")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=DEFAULT_PEER_VENV,
        help="venv with bench/peer/requirements.txt (created when missing)",
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of idle CPU reading before the load, once settled (5)"
    )
    parser.add_argument("--json", type=Path, help="write every figure and raw sample here")
    args = parser.parse_args(argv)
    become_subreaper()
    peer_python = ensure_peer_venv(args.peer_venv)
    runs: list[Run] = []
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="salon-peer-") as tmp:
        for sessions in args.sessions:
            for system in args.systems:
                workdir = Path(tmp) / f"{system}-{sessions}"
                workdir.mkdir()
                runs.append(run_one(system, sessions, args, peer_python, workdir))
    command = "python -m bench.peer " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = markdown_table(runs)
    print(f"\n{command}\nload average before {load_start}, after {load_average()}\n\n{table}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "runs": [_run_json(r) for r in runs]}, indent=1))
    failed = any(r.result is None or r.result.errors for r in runs)
    return 1 if failed else 0


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "system": run.system,
        "sessions": run.sessions,
        "load_before": run.load_before,
        "load_after": run.load_after,
        "start_s": run.start_s,
        "failure": run.failure,
        "summary": run.result.summary() if run.result else None,
        "ttft_s": run.result.ttft_s if run.result else [],
    }


if __name__ == "__main__":
    sys.exit(main())
