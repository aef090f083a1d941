"""Benchmark of issue 16's memory API and documents: what ``SearchMemory`` costs scoped to a session and to a
user, and how fast PDF, DOCX and HTML documents are converted.

search    A ``memories`` table of ``--rows`` rows (default 50,000) across ``--sessions`` sessions (1,000) of
          ``--users`` users (100) of one tenant, random unit vectors and varied text (as bench_retrieval does),
          with the engine's indexes (user_id BTree among them). Then ``MemorySearch.search`` with the bundled
          embedding model, ``--queries`` times each: one session (50 rows), one user (500 rows). p50/p99 of
          the whole call (query embedding, vector and full-text search, fusion).
convert   ``storage.documents.convert`` of a 50-page PDF, a 400-paragraph DOCX (a heading every 10) and an
          HTML page of the same text: milliseconds each (median of 5).

    python -m bench.bench_user_memory [--rows 50000] [--queries 100]

The machine is shared: the load average is printed; quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np

from salon.storage import TurnRecord, build_embedder
from salon.storage.documents import DOCX, HTML, PDF, convert
from salon.storage.lance.memories import memories_to_batch
from salon.storage.lance.memory_search import MemorySearch
from salon.storage.tables import create_missing_indexes, memories_spec, open_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from doc_fixtures import docx_bytes, html_page, pdf_bytes

WORDS = [
    "garden",
    "train",
    "lunch",
    "film",
    "sister",
    "dog",
    "bicycle",
    "kitchen",
    "invoice",
    "holiday",
    "doctor",
    "football",
    "piano",
    "recipe",
    "weather",
    "office",
    "meeting",
    "birthday",
    "flight",
    "hotel",
    "museum",
    "coffee",
    "library",
    "parcel",
    "boiler",
    "password",
    "river",
]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


async def bench_search(rows: int, sessions: int, users: int, queries: int) -> None:
    embedder = await asyncio.to_thread(build_embedder, "default")
    rng = random.Random(16)
    with tempfile.TemporaryDirectory() as tmp:
        db = await lancedb.connect_async(tmp)
        spec = memories_spec(embedder.dim)
        table = await open_table(db, spec)
        batch = 5000
        for start in range(0, rows, batch):
            turns = []
            for i in range(start, min(rows, start + batch)):
                session = i % sessions
                turns.append(
                    TurnRecord(
                        "acme", f"s{session}", f"t{i}", "1", i // sessions + 1, "completed",
                        _text(rng), _text(rng), user_id=f"u{session % users}", completed_at_ns=i,
                    )
                )  # fmt: skip
            vectors = np.random.default_rng(start).normal(size=(len(turns), embedder.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            await table.add(memories_to_batch(turns, vectors.tolist(), dim=embedder.dim, model_id=embedder.model_id))
        await create_missing_indexes(table, spec)
        table.close()
        db.close()
        search = await MemorySearch.open(tmp, embedder)
        try:
            for label, scope in (("one session", {"session_id": "s7"}), ("one user", {"user_id": "u7"})):
                for _ in range(5):
                    await search.search("acme", "where does my sister keep her bicycle", top_k=4, **scope)
                samples = []
                for q in range(queries):
                    started = time.perf_counter()
                    await search.search("acme", f"{_text(rng)} {q}", top_k=4, **scope)
                    samples.append((time.perf_counter() - started) * 1000)
                print(f"SearchMemory, {label}: {_percentiles(samples)}")
        finally:
            await search.close()


def bench_convert() -> None:
    rng = random.Random(6)
    pages = [[_text(rng) for _ in range(20)] for _ in range(50)]
    blocks = [(2 if i % 10 == 0 else 0, _text(rng)) for i in range(400)]
    documents = {
        "PDF, 50 pages": (PDF, "", pdf_bytes(pages)),
        "DOCX, 400 paragraphs": (DOCX, "", docx_bytes(blocks)),
        "HTML, 400 blocks": (HTML, html_page("Bench", [(f"Part {i}", t) for i, (_, t) in enumerate(blocks)]), b""),
    }
    for label, (media_type, text, content) in documents.items():
        times = []
        for _ in range(5):
            started = time.perf_counter()
            convert(media_type, text, content)
            times.append((time.perf_counter() - started) * 1000)
        print(f"convert {label}: {statistics.median(times):.1f} ms")


def main() -> None:
    """Run both sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    asyncio.run(bench_search(args.rows, args.sessions, args.users, args.queries))
    bench_convert()


if __name__ == "__main__":
    main()
