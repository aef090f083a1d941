"""``python -m bench.faults``: run the fault suite and print what each fault cost.

The short form (``--short``, the default: 2 runs per fault) is what CI runs; the full form (``--full``: 20 runs
per fault) is the benchmark recorded in ``bench/RESULTS-faults.md``. The exit status is 1 when a promise broke
(see :func:`bench.faults.report.verdict`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.common import load_average, positive_int, run_header
from bench.faults.faults import catalogue
from bench.faults.report import render, verdict
from bench.faults.suite import Options, run_suite


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    names = [f.name for f in catalogue()]
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults: " + ", ".join(names),
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--short", action="store_true", help="a few runs per fault (the default)")
    form.add_argument("--full", action="store_true", help="20 runs per fault")
    parser.add_argument("--runs", type=positive_int, default=None, help="runs per fault (overrides the form)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice (default: %(default)s)")
    parser.add_argument("--clients", type=positive_int, default=3, help="closed-loop clients per run (default: 3)")
    parser.add_argument("--faults", default="", help="comma-separated faults to run (default: all); see the list below")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data and logs here (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="log the suite's progress")
    return parser


async def main(argv: list[str] | None = None) -> int:
    """Run the suite as the command line says; the exit status."""
    args = build_parser().parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - {f.name for f in catalogue()}
    if unknown:
        print(f"unknown faults: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    runs = args.runs or (20 if args.full else 2)
    options = Options(
        runs=runs,
        clients=args.clients,
        seed=args.seed,
        faults=faults,
        work_dir=args.work_dir,
        keep=args.work_dir is not None,
    )
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    command = shlex.join(["python", "-m", "bench.faults", *(argv if argv is not None else sys.argv[1:])])
    load_before = load_average()
    started = time.monotonic()
    print(f"{command}\nload average before: {load_before}", flush=True)
    results, notes = await run_suite(options)
    elapsed = time.monotonic() - started
    load_after = load_average()
    print(render(results, notes))
    print(f"\ntotal {elapsed:.0f} s; load average after: {load_after}")
    broken = verdict(results)
    print("every promise held" if not broken else "BROKEN: " + "; ".join(broken))
    if args.json is not None:
        payload = {
            **run_header(command, load_before, load_after),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "seconds": elapsed,
            "faults": [r.row() for r in results],
            "notes": notes,
            "broken": broken,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
