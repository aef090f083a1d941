"""A driver process: runs one concurrency level of the load generator against one system and prints the
level's figures as one JSON object on stdout (progress goes to stderr).

``python -m bench.peer.drive SYSTEM --sessions N ...`` with SYSTEM one of ``library`` (LangGraph in this
process; its CPU is this process's), ``langgraph-dev`` (``--url``) or ``salon`` (``--target``); the server's
CPU is read from /proc for the tree of ``--server-pid``. The harness (``python -m bench.peer``) starts the
servers and runs this under the right Python: LangGraph's under the peer venv's, Salon's under the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
from collections.abc import Callable

from bench.peer.load import Target, run_level
from bench.peer.procs import self_cpu_s, tree_cpu_by_name, tree_cpu_s

SYSTEMS = ("library", "langgraph-dev", "salon")


def _make_target(args: argparse.Namespace) -> tuple[Target, Callable[[], float], str]:
    """The target, its CPU probe and what that probe covers."""
    # Imported by name: this module runs under two venvs (LangGraph's, the engine's), each without the
    # other's libraries, and each side's target module is type-checked in its own venv.
    if args.system == "library":
        langgraph = importlib.import_module("bench.peer.targets_langgraph")
        return langgraph.LibraryTarget(args.tokens), self_cpu_s, "whole process (library and load generator)"
    if args.server_pid is None:
        raise SystemExit("--server-pid is needed for a server")
    probe = functools.partial(tree_cpu_s, args.server_pid)
    if args.system == "langgraph-dev":
        langgraph = importlib.import_module("bench.peer.targets_langgraph")
        return langgraph.DevServerTarget(args.url, args.tokens, args.timeout), probe, "server process tree"
    salon = importlib.import_module("bench.peer.targets_salon")
    return salon.SalonTarget(args.target, args.tokens), probe, "server process tree"


async def _main(args: argparse.Namespace) -> None:
    target, probe, scope = _make_target(args)
    try:
        result = await run_level(
            target,
            system=args.label or args.system,
            sessions=args.sessions,
            warmup=args.warmup,
            turns=args.turns,
            timeout_s=args.timeout,
            cpu_probe=probe,
            cpu_scope=scope,
            idle_s=args.idle,
            breakdown_probe=functools.partial(tree_cpu_by_name, args.server_pid) if args.server_pid else None,
        )
    finally:
        await target.close()
    print(json.dumps(result.to_json()), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the level, print its JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.peer.drive", description=__doc__)
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--label", default="", help="name of the row in the results (default: SYSTEM)")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--turns", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a turn may take")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU reading first")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--url", default="", help="langgraph dev's base URL")
    parser.add_argument("--target", default="", help="Salon's gRPC target (host:port)")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
