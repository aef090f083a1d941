"""Benchmark of retrieval (issue 4): memory search at scale, ingestion, embedding, and what retrieval adds
to a turn's time to first token. The sections, in the order they run:

embed      The bundled model (all-MiniLM-L6-v2 int8 on onnxruntime, one intra-op thread): texts/s for
           sentence-length texts (~30 words) one at a time and in batches of 8 and 32, and for chunk-length
           texts (~800 characters) in batches of 8 and 32; the latency of one query embedding, p50/p99.
memories   A ``memories`` table of ``--rows`` rows (default 1,000,000) across ``--sessions`` sessions (10,000)
           of 10 tenants, written in batches of ``--batch-rows``. The bulk rows carry random unit vectors (1M
           real embeddings would take about an hour here; a random vector is as costly to store and scan as a
           real one) and realistic text: 2,000 distinct exchanges built from ~150 words (so the full-text index
           has real postings lists, long ones for common words). Then the engine's indexes (tenant Bitmap,
           session and key BTree, FTS on text), built as the store builds them. Then the measured session gets
           20 more turns through ``TranscriptStore.write`` with the real embedder: the persistence path, real
           vectors, and rows the indexes have not seen yet (as in production between two optimize() calls).
retrieval  ``LanceRetriever.retrieve`` for the measured session (prefiltered to its tenant and session, the last
           10 turns excluded as the window, top_k 4), ``--queries`` times after a warm-up: the whole call
           (query embedding + vector and full-text search on memories and on knowledge, fused), and its parts
           alone: the query embedding, the vector search, the full-text search. p50/p99 of each. The whole
           call is what retrieval adds to a turn's time to first token (aim: at most 10 ms at p50).
ingest     ``KnowledgeBase.ingest`` of ``--docs`` markdown documents (~3,000 characters each) with the real
           embedder, into the same LanceDB directory: chunks/s and documents/s, end to end (chunking,
           embedding, merge-insert, index creation).

The machine is shared: the load average is printed before each section; quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from bench.common import load_average, percentile, positive_int
from salon.storage import Document, RetrievalQuery, TurnRecord, default_embedder
from salon.storage.embedding import OnnxEmbedder
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memories import MEMORIES
from salon.storage.lance.retrieval import LanceRetriever, memory_filter, search_table
from salon.storage.lance.schemas import MEMORY_KEY, memories_schema
from salon.storage.lance.vector_index import NPROBES, REFINE_FACTOR, index_config
from salon.storage.retrieval import MEMORY
from salon.storage.tables import TranscriptStore, create_missing_indexes, memories_spec

TENANTS = 10
MEASURED_TENANT = "tenant-3"
MEASURED_SESSION = "session-4242"
FRESH_TURNS = 20
WINDOW_TURNS = 10
SUBJECTS = [
    "the invoice",
    "refund",
    "shipment",
    "router",
    "contract",
    "meeting",
    "deploy",
    "database",
    "printer",
    "laptop",
    "garden",
    "recipe",
    "flight",
    "hotel",
    "train",
    "budget",
    "report",
    "dashboard",
    "password",
    "backup",
    "cluster",
    "kitten",
    "doctor",
    "school",
    "lease",
    "car",
]
VERBS = [
    "was delayed",
    "needs approval",
    "broke again",
    "arrived today",
    "costs too much",
    "moved to Tuesday",
    "failed overnight",
    "looks fine now",
    "was cancelled",
    "got renewed",
    "is overdue",
    "was upgraded",
    "needs a new battery",
    "ran out of space",
    "was rebooked",
    "is on hold",
    "was shipped to Porto",
    "went missing",
    "was paid twice",
    "needs a second review",
]
DETAILS = [
    "according to Maria",
    "after the storm",
    "before the audit",
    "during the holidays",
    "for the third time",
    "in Lisbon",
    "in the Berlin office",
    "last Friday",
    "on the staging server",
    "since the update",
    "with a 20 percent discount",
    "without any notice",
    "by express mail",
    "for the Q3 review",
    "at the customer's request",
    "because of the strike",
]
QUERIES = (
    "when is the meeting now?",
    "what happened to the shipment to Porto?",
    "did the backup fail again?",
    "how much does the contract cost?",
    "which invoice was paid twice?",
    "is the database upgrade done?",
    "what did Maria say about the router?",
    "why was the flight cancelled?",
)


def sentence(rng: random.Random) -> str:
    """A realistic short turn text (user line and reply) from the vocabulary."""
    subject = rng.choice(SUBJECTS).removeprefix("the ")
    return (
        f"User: The {subject} {rng.choice(VERBS)} {rng.choice(DETAILS)}. What should I do?\n"
        f"Assistant: Noted: the {subject} {rng.choice(VERBS)}; I will remind you {rng.choice(DETAILS)}."
    )


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int) -> pa.FixedSizeListArray:
    values = rng.standard_normal((n, dim), dtype=np.float32)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim)


def session_of(row: int, sessions: int) -> tuple[str, str]:
    """(tenant, session) of bulk row ``row``: sessions round-robin, so each session's rows are spread over
    every batch (fragment), as turns of live sessions interleave in the writer's flushes."""
    s = row % sessions
    return f"tenant-{s % TENANTS}", f"session-{s}"


def stats(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3), "n": len(ms)}


async def timed(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


def section(name: str) -> None:
    print(f"\n== {name} (load {load_average()}) ==", flush=True)


def section_embed(model: OnnxEmbedder, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1)
    short = [sentence(rng) for _ in range(args.embed_texts)]
    long = [" ".join(sentence(rng) for _ in range(5))[:800] for _ in range(args.embed_texts)]
    model.embed_sync(short[:8])  # warm-up: first runs allocate
    result: dict[str, Any] = {}
    for batch in (1, 8, 32):
        started = time.perf_counter()
        model.embed_sync(short, batch_size=batch)
        result[f"sentence_texts_per_s_batch_{batch}"] = round(len(short) / (time.perf_counter() - started), 1)
    for batch in (8, 32):
        started = time.perf_counter()
        model.embed_sync(long, batch_size=batch)
        result[f"chunk_texts_per_s_batch_{batch}"] = round(len(long) / (time.perf_counter() - started), 1)
    one = []
    for text in short[:100]:
        t = time.perf_counter()
        model.embed_sync([text])
        one.append(time.perf_counter() - t)
    result["one_query_embedding"] = stats(one)
    print(json.dumps(result), flush=True)
    return result


async def section_memories(uri: str, model: OnnxEmbedder, args: argparse.Namespace) -> dict[str, Any]:
    dim = model.dim
    schema = memories_schema(dim)
    db = await lancedb.connect_async(uri)
    table = await db.create_table(MEMORIES, schema=schema)
    rng = random.Random(2)
    nprng = np.random.default_rng(3)
    texts = [sentence(rng) for _ in range(2000)]
    write_s = 0.0
    started_all = time.perf_counter()
    for start in range(0, args.rows, args.batch_rows):
        n = min(args.batch_rows, args.rows - start)
        rows = range(start, start + n)
        owners = [session_of(r, args.sessions) for r in rows]
        index_in_session = [r // args.sessions + 1 for r in rows]
        turn_ids = [f"b{r}" for r in rows]
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([f"{t}.{s}.{tid}" for (t, s), tid in zip(owners, turn_ids, strict=True)]),
                pa.array([t for t, _ in owners]),
                pa.array([s for _, s in owners]),
                pa.array(turn_ids),
                pa.array(index_in_session, type=pa.int64()),
                pa.array([texts[(r * 7919) % len(texts)] for r in rows]),
                random_unit_vectors(nprng, n, dim),
                pa.array([model.model_id] * n),
                pa.array([0] * n, type=pa.int64()),
            ],
            schema=schema,
        )
        t = time.perf_counter()
        await table.add(batch)
        write_s += time.perf_counter() - t
    bulk_s = time.perf_counter() - started_all
    print(f"{args.rows} rows written in {bulk_s:.1f} s ({args.rows / write_s:.0f} rows/s in add())", flush=True)
    started = time.perf_counter()
    indexed = await create_missing_indexes(table, memories_spec(dim))
    index_s = time.perf_counter() - started
    print(f"indexes built in {index_s:.1f} s (all: {indexed})", flush=True)
    table.close()  # type: ignore[no-untyped-call]
    db.close()  # type: ignore[no-untyped-call]

    store = await TranscriptStore.open(uri, embedder=model)
    fresh = [
        TurnRecord(
            tenant_id=MEASURED_TENANT,
            session_id=MEASURED_SESSION,
            turn_id=f"fresh{i}",
            incarnation="1",
            turn_index=10_000 + i,
            status="completed",
            user_text=sentence(rng).split("\n")[0].removeprefix("User: "),
            reply_text="Noted.",
        )
        for i in range(FRESH_TURNS)
    ]
    started = time.perf_counter()
    await store.write(fresh, [])
    fresh_s = time.perf_counter() - started
    in_session = await store.count(MEMORIES, f"session_id = '{MEASURED_SESSION}'")
    await store.close()
    result = {
        "rows": args.rows,
        "sessions": args.sessions,
        "rows_in_measured_session": in_session,
        "bulk_write_s": round(bulk_s, 1),
        "add_rows_per_s": round(args.rows / write_s),
        "index_build_s": round(index_s, 1),
        "fresh_turns_write_ms": round(fresh_s * 1000, 1),
    }
    print(json.dumps(result), flush=True)
    return result


async def section_retrieval(uri: str, model: OnnxEmbedder, args: argparse.Namespace) -> dict[str, Any]:
    retriever = await LanceRetriever.open(uri, model)
    window = frozenset(f"fresh{i}" for i in range(FRESH_TURNS - WINDOW_TURNS, FRESH_TURNS))
    queries = [QUERIES[i % len(QUERIES)] for i in range(args.queries)]

    def query(i: int) -> RetrievalQuery:
        return RetrievalQuery(MEASURED_TENANT, MEASURED_SESSION, queries[i], top_k=4, exclude_turn_ids=window)

    memories = retriever._memories  # the parts are timed on the retriever's own table handle
    where = memory_filter(MEASURED_TENANT, MEASURED_SESSION, window)
    vectors = model.embed_sync(list(QUERIES))
    try:
        for i in range(args.warmup):
            await retriever.retrieve(query(i))
        found = await retriever.retrieve(query(0))
        whole = await timed(args.queries, lambda i: retriever.retrieve(query(i)))
        embed = await timed(args.queries, lambda i: model.embed([queries[i]]))

        async def vector_only(i: int) -> object:
            rows = memories.query().nearest_to(vectors[i % len(QUERIES)]).distance_type("cosine").where(where)
            return await rows.select([MEMORY_KEY, "_distance"]).limit(8).to_arrow()

        async def text_only(i: int) -> object:
            rows = memories.query().nearest_to_text(queries[i], columns="text").where(where)
            return await rows.select([MEMORY_KEY, "_score"]).limit(8).to_arrow()

        async def hybrid_memory(i: int) -> object:
            vector = vectors[i % len(QUERIES)]
            return await search_table(memories, MEMORY, where=where, text=queries[i], vector=vector, limit=8)

        vector = await timed(args.queries, vector_only)
        text = await timed(args.queries, text_only)
        hybrid = await timed(args.queries, hybrid_memory)
    finally:
        await retriever.close()
    result = {
        "retrieve_whole": stats(whole),
        "query_embedding": stats(embed),
        "memory_vector_search": stats(vector),
        "memory_fts_search": stats(text),
        "memory_hybrid_search_no_embedding": stats(hybrid),
        "sample": [(p.source, p.chunk_id, round(p.score, 3)) for p in found],
    }
    print(json.dumps(result), flush=True)
    return result


async def section_ingest(uri: str, model: OnnxEmbedder, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(4)

    def document(i: int) -> Document:
        sections = [f"## Topic {j}\n\n" + " ".join(sentence(rng) for _ in range(4)) for j in range(4)]
        return Document(f"doc-{i}", f"# Handbook {i}\n\n" + "\n\n".join(sections), f"Handbook {i}", "text/markdown")

    documents = [document(i) for i in range(args.docs)]

    async def source() -> AsyncIterator[Document]:
        for d in documents:
            yield d

    kb = await KnowledgeBase.open(uri, model)
    try:
        started = time.perf_counter()
        chunks = 0
        async for outcome in kb.ingest(MEASURED_TENANT, source()):
            if not outcome.ok:
                raise RuntimeError(f"ingestion refused {outcome.document_id}: {outcome.error_reason}")
            chunks += outcome.chunks
        elapsed = time.perf_counter() - started
    finally:
        await kb.close()
    result = {
        "documents": len(documents),
        "chunks": chunks,
        "characters_per_document": round(sum(len(d.text) for d in documents) / len(documents)),
        "seconds": round(elapsed, 2),
        "chunks_per_s": round(chunks / elapsed, 1),
        "documents_per_s": round(len(documents) / elapsed, 1),
    }
    print(json.dumps(result), flush=True)
    return result


ANN_BASES = 2000
"""Real embeddings the ANN section's rows are drawn around (each row: one of them plus noise)."""
ANN_NOISE = 1.0
"""Norm of the noise added to a base embedding (then normalised): a row keeps a cosine of about 0.7 with its
base, so rows form clusters like real texts on few subjects do, without embedding a million texts."""
ANN_SCOPE_ROWS = 100
"""Rows of one small scope (a session's memories, a small tenant's knowledge) in the ANN section."""
ANN_K = 50
ANN_PQ_SEARCHES = ((0, 0), (20, 10), (NPROBES, REFINE_FACTOR), (NPROBES, 30), (100, 30))
"""(nprobes, refine_factor) tried on IVF_PQ (0: LanceDB's default)."""
ANN_HNSW_SEARCHES = ((0, 0), (50, 0))
"""The same on IVF_HNSW_SQ (no refine: its vectors are only scalar-quantised)."""
"""Rows each search returns (the engine asks 2 x top_k per search: 50 at its default top_k of 25)."""


def ann_vectors(rng: np.random.Generator, bases: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors, each a random base plus noise of norm about :data:`ANN_NOISE`, normalised."""
    dim = bases.shape[1]
    values = bases[rng.integers(0, len(bases), n)] + rng.standard_normal((n, dim), dtype=np.float32) * (
        ANN_NOISE / np.sqrt(dim)
    )
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    return values.astype(np.float32)


async def ann_table(db: Any, name: str, rng: np.random.Generator, bases: np.ndarray, *, rows: int, batch: int) -> Any:
    """A table of ``rows`` rows: ``vector``, ``scope`` (small scopes of :data:`ANN_SCOPE_ROWS` rows, spread over
    every fragment) and ``tenant_id`` (one big tenant), with the scalar indexes the engine's tables have."""
    dim = bases.shape[1]
    schema = pa.schema(
        [
            pa.field("row", pa.int64()),
            pa.field("tenant_id", pa.string()),
            pa.field("scope", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )
    table = await db.create_table(name, schema=schema, mode="overwrite")
    scopes = max(1, rows // ANN_SCOPE_ROWS)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        ids = np.arange(start, start + n)
        vectors = ann_vectors(rng, bases, n)
        await table.add(
            pa.table(
                {
                    "row": pa.array(ids),
                    "tenant_id": pa.array(["big"] * n),
                    "scope": pa.array([f"s{i % scopes}" for i in ids]),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
                },
                schema=schema,
            )
        )
    await table.create_index("tenant_id", config=lancedb.index.Bitmap())
    await table.create_index("scope", config=lancedb.index.BTree())
    await table.optimize()
    return table


async def ann_search(
    table: Any, query: np.ndarray, where: str, *, exact: bool, nprobes: int = 0, refine: int = 0
) -> list[int]:
    search = table.query().nearest_to(query.tolist()).column("vector").distance_type("cosine").where(where)
    if exact:
        search = search.bypass_vector_index()
    else:
        if nprobes:
            search = search.nprobes(nprobes)
        if refine:
            search = search.refine_factor(refine)
    found = await search.select(["row"]).limit(ANN_K).to_arrow()
    return [int(r) for r in found.column("row").to_pylist()]


async def ann_measure(
    table: Any, queries: np.ndarray, where: str, reference: list[list[int]] | None, **how: Any
) -> tuple[dict[str, Any], list[list[int]]]:
    """Latency of ``len(queries)`` searches, and their recall@ANN_K against ``reference`` (when given)."""
    results: list[list[int]] = []
    samples: list[float] = []
    for q in queries:
        started = time.perf_counter()
        results.append(await ann_search(table, q, where, **how))
        samples.append(time.perf_counter() - started)
    figures: dict[str, Any] = stats(samples)
    if reference is not None:
        recalls = [len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(results, reference, strict=True)]
        figures["recall"] = round(sum(recalls) / len(recalls), 3)
        figures["returned"] = round(sum(len(a) for a in results) / len(results), 1)
    return figures, results


async def section_ann(model: OnnxEmbedder, args: argparse.Namespace) -> dict[str, Any]:
    """Exact search against an IVF index (IVF_PQ, IVF_HNSW_SQ) at each of ``--ann-rows``: build time, recall@20
    against exact search, latency; for the whole big tenant and for one small scope (a prefilter)."""
    rng_text = random.Random(11)
    texts = [sentence(rng_text) for _ in range(ANN_BASES + args.queries)]
    print(f"embedding {len(texts)} texts for the vector geometry ...", flush=True)
    embedded = np.asarray(await asyncio.to_thread(model.embed_sync, texts), dtype=np.float32)
    bases, query_bases = embedded[:ANN_BASES], embedded[ANN_BASES:]
    rng = np.random.default_rng(5)
    queries = ann_vectors(rng, query_bases, args.queries)
    result: dict[str, Any] = {"k": ANN_K, "queries": args.queries, "noise": ANN_NOISE}
    with tempfile.TemporaryDirectory(prefix="salon-bench-ann-") as tmp:
        db = await lancedb.connect_async(tmp)
        for rows in args.ann_rows:
            section(f"ann, {rows} rows")
            started = time.perf_counter()
            table = await ann_table(db, f"ann{rows}", rng, bases, rows=rows, batch=args.batch_rows)
            figures: dict[str, Any] = {"write_and_scalar_indexes_s": round(time.perf_counter() - started, 1)}
            scopes = {"tenant": "tenant_id = 'big'", "scope": "scope = 's7'"}
            exact: dict[str, list[list[int]]] = {}
            for label, where in scopes.items():
                figures[f"exact_{label}"], exact[label] = await ann_measure(table, queries, where, None, exact=True)
                print(label, "exact", figures[f"exact_{label}"], flush=True)
            for kind in args.ann_index:
                # IVF_PQ as the engine builds it (storage.lance.vector_index); IVF_HNSW_SQ with LanceDB's defaults.
                config = index_config(rows) if kind == "ivf_pq" else lancedb.index.HnswSq(distance_type="cosine")
                started = time.perf_counter()
                await table.create_index("vector", config=config, replace=True)
                figures[f"{kind}_build_s"] = round(time.perf_counter() - started, 1)
                print(kind, "built in", figures[f"{kind}_build_s"], "s", flush=True)
                for label, where in scopes.items():
                    settings = ANN_PQ_SEARCHES if kind == "ivf_pq" else ANN_HNSW_SEARCHES
                    for nprobes, refine in settings:
                        key = f"{kind}_{label}_nprobes{nprobes or 'auto'}_refine{refine}"
                        figures[key], _ = await ann_measure(
                            table, queries, where, exact[label], exact=False, nprobes=nprobes, refine=refine
                        )
                        print(key, figures[key], flush=True)
            result[str(rows)] = figures
            await db.drop_table(f"ann{rows}")
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_retrieval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=positive_int, default=1_000_000, help="memory rows (1,000,000)")
    parser.add_argument("--sessions", type=positive_int, default=10_000, help="sessions they belong to (10,000)")
    parser.add_argument("--batch-rows", type=positive_int, default=50_000, help="rows per table.add (50,000)")
    parser.add_argument("--queries", type=positive_int, default=200, help="timed retrievals per measure (200)")
    parser.add_argument("--warmup", type=positive_int, default=20, help="retrievals before timing (20)")
    parser.add_argument("--docs", type=positive_int, default=100, help="documents ingested (100)")
    parser.add_argument("--embed-texts", type=positive_int, default=256, help="texts per embedding measure (256)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="LanceDB directory, kept (default: a temporary one); if it holds tables from an earlier run, they "
        "are reused and only embed and retrieval run",
    )
    parser.add_argument(
        "--ann",
        action="store_true",
        help="run only the ANN section: exact search against vector indexes at each of --ann-rows",
    )
    parser.add_argument(
        "--ann-rows",
        type=lambda text: [positive_int(v) for v in text.split(",")],
        default=[100_000, 1_000_000],
        help="table sizes of the ANN section (100000,1000000)",
    )
    parser.add_argument(
        "--ann-index",
        type=lambda text: text.split(","),
        default=["ivf_pq", "ivf_hnsw_sq"],
        help="vector indexes the ANN section builds (ivf_pq,ivf_hnsw_sq)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure as JSON")
    return parser


async def bench(args: argparse.Namespace) -> int:
    """Run every section; 0 when done (the 10 ms aim is reported, not enforced)."""
    print(f"Salon retrieval benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {shlex.join([Path(sys.executable).name, '-m', 'bench.bench_retrieval', *sys.argv[1:]])}")
    started = time.perf_counter()
    model = await asyncio.to_thread(default_embedder)
    results: dict[str, Any] = {"model": model.model_id}
    if args.ann:
        results["ann"] = await section_ann(model, args)
        print(f"\nwall time {time.perf_counter() - started:.0f} s; load average after: {load_average()}")
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="salon-bench-retrieval-") as tmp:
        uri = str(args.dir or Path(tmp) / "lance")
        reuse = args.dir is not None and (args.dir / f"{MEMORIES}.lance").exists()
        section("embed")
        results["embed"] = section_embed(model, args)
        if reuse:
            print(f"\nreusing the tables in {args.dir}: no memories or ingest section", flush=True)
        else:
            section("memories")
            results["memories"] = await section_memories(uri, model, args)
            section("ingest")
            results["ingest"] = await section_ingest(uri, model, args)
        section("retrieval")
        results["retrieval"] = await section_retrieval(uri, model, args)
    whole = results["retrieval"]["retrieve_whole"]["p50_ms"]
    print(f"\nretrieval adds {whole:.2f} ms to time to first token at p50 (aim: at most 10 ms)")
    print(f"wall time {time.perf_counter() - started:.0f} s; load average after: {load_average()}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main() -> None:
    """Entry point."""
    args = build_parser().parse_args()
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
