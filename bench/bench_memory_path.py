"""The CPU that long-term memory adds to a turn, part by part, away from the noise of a whole engine (issue 15).

Two measurements, each as CPU time of this process (LanceDB's native threads and the model's worker threads
included):

* ``queries``: the query embedding of concurrent turns. ``--concurrency`` callers each embed
  ``--queries`` distinct short texts one after another (closed loop: the next as soon as the last is back),
  with the bundled model called directly and through :class:`~salon.storage.embedding.CoalescingEmbedder`
  (what a session host uses). Closed loops keep the queue full, so this is the most coalescing can give; a
  host that also streams replies between queries gets less.
* ``index``: retrieval against a memories table that grows as under load. Each simulated second the indexer
  writes one flush (``--rows-per-flush`` turns of 64 sessions, one fragment) and ``--queries-per-s``
  retrievals run (the engine's hybrid search, one session's prefilter); the table is optimized every 50
  flushes (the indexer before) or paced by time (:class:`~salon.storage.tables.MemoryIndexer` now). Vectors
  come from the hash embedder (384 dimensions), so only LanceDB's work is measured.

    python -m bench.bench_memory_path
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import load_average, positive_int
from salon.storage import RetrievalQuery, TurnRecord
from salon.storage.embedding import CoalescingEmbedder, Embedder, HashEmbedder, default_embedder
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.tables import MemoryIndexer, TranscriptStore

SESSIONS = 64
USER_TEXT = "the quick brown fox jumps over the lazy dog"
REPLY_TEXT = " ".join((USER_TEXT.split() * 8)[:64])


async def query_cpu(embedder: Embedder, concurrency: int, queries: int) -> float:
    """CPU ms per query embedding with ``concurrency`` closed-loop callers."""

    async def caller(index: int) -> None:
        for j in range(queries):
            await embedder.embed([f"{USER_TEXT} (caller {index}, question {j})"])

    await embedder.embed(["warm up"])
    started = time.process_time()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return (time.process_time() - started) * 1000 / (concurrency * queries)


async def measure_queries(concurrency: Sequence[int], queries: int) -> list[dict[str, Any]]:
    model = await asyncio.to_thread(default_embedder)
    rows = []
    for c in concurrency:
        direct = await query_cpu(model, c, queries)
        coalescing = CoalescingEmbedder(model)
        shared = await query_cpu(coalescing, c, queries)
        runs = coalescing.calls - 1  # less the warm-up
        await coalescing.close()
        rows.append(
            {"concurrency": c, "direct_ms": direct, "coalescing_ms": shared, "runs": runs, "queries": c * queries}
        )
        print(
            f"  queries at {c:>2} concurrent: {direct:.2f} ms CPU each alone, {shared:.2f} coalesced "
            f"({c * queries} queries in {runs} model runs)",
            flush=True,
        )
    return rows


def turns(start: int, count: int) -> list[TurnRecord]:
    return [
        TurnRecord(
            tenant_id="bench",
            session_id=f"s{n % SESSIONS}",
            turn_id=f"t{n}",
            incarnation="i",
            turn_index=n // SESSIONS + 1,
            status="completed",
            user_text=USER_TEXT,
            reply_text=REPLY_TEXT,
            completed_at_ns=time.time_ns(),
        )
        for n in range(start, start + count)
    ]


async def run_index(paced: bool, seconds: int, rows_per_flush: int, queries_per_s: int) -> dict[str, Any]:
    """One simulated run; CPU of the retrievals and of the optimizations."""
    embedder = HashEmbedder(384)
    with tempfile.TemporaryDirectory(prefix="salon-bench-memory-") as root:
        store = await TranscriptStore.open(root, embedder=embedder)
        simulated = 0.0

        def clock() -> float:
            return simulated + time.perf_counter()

        indexer = MemoryIndexer(store, clock=clock)
        retriever = await LanceRetriever.open(root, embedder)
        query_cpu_s = optimize_cpu_s = 0.0
        optimizations = 0
        written = 0
        try:
            for second in range(seconds):
                await indexer.write(turns(written, rows_per_flush), [])
                written += rows_per_flush
                started = time.process_time()
                if paced:
                    before = indexer.optimizations
                    await indexer.optimize()
                    optimizations += indexer.optimizations - before
                elif (second + 1) % 50 == 0:
                    await store.optimize()
                    optimizations += 1
                optimize_cpu_s += time.process_time() - started
                started = time.process_time()
                for q in range(queries_per_s):
                    session = f"s{(second * queries_per_s + q) % SESSIONS}"
                    await retriever.retrieve(RetrievalQuery("bench", session, USER_TEXT, include_knowledge=False))
                query_cpu_s += time.process_time() - started
                simulated += 1.0
        finally:
            await retriever.close()
            await store.close()
    queries = seconds * queries_per_s
    result = {
        "policy": "paced by time" if paced else "every 50 flushes",
        "rows": written,
        "optimizations": optimizations,
        "query_ms": query_cpu_s * 1000 / queries,
        "optimize_ms_per_query": optimize_cpu_s * 1000 / queries,
    }
    print(
        f"  {result['policy']:>16}: {written} rows, {optimizations} optimizations; per retrieval "
        f"{result['query_ms']:.2f} ms CPU searching + {result['optimize_ms_per_query']:.2f} ms optimizing",
        flush=True,
    )
    return result


async def main(args: argparse.Namespace) -> int:
    load_before = load_average()
    print(f"load average before: {load_before}")
    results: dict[str, Any] = {"command": "python -m bench.bench_memory_path " + " ".join(sys.argv[1:])}
    if "queries" in args.parts:
        print("query embedding (bundled model):")
        results["queries"] = await measure_queries(args.concurrency, args.queries)
    if "index" in args.parts:
        print(f"retrieval while the memories table grows ({args.seconds} s simulated):")
        results["index"] = [
            await run_index(paced, args.seconds, args.rows_per_flush, args.queries_per_s) for paced in (False, True)
        ]
    results["load_before"], results["load_after"] = load_before, load_average()
    print(f"load average after: {results['load_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_memory_path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--parts", default="queries,index", help="comma-separated: queries, index (default: both)")
    p.add_argument(
        "--concurrency",
        type=lambda raw: [positive_int(v) for v in raw.split(",")],
        default=[1, 8, 32],
        help="concurrent callers for the query part (default: 1,8,32)",
    )
    p.add_argument("--queries", type=positive_int, default=20, help="queries per caller (default: 20)")
    p.add_argument("--seconds", type=positive_int, default=60, help="simulated seconds of the index part (default: 60)")
    p.add_argument("--rows-per-flush", type=positive_int, default=35, help="turns per flush (default: 35)")
    p.add_argument("--queries-per-s", type=positive_int, default=35, help="retrievals per second (default: 35)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    return p


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parser().parse_args())))
