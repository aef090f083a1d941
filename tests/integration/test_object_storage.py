"""LanceDB on object storage: every table on a real S3-compatible server on loopback (moto's server mode, a
subprocess on a port it picks), written by several writers at once.

Lance commits a table version with a conditional put (``If-None-Match: *``): two writers committing at once
do not overwrite each other, the loser rebases or retries. The tests count what each writer was told was
stored and find every row of it exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import collect_turn, create_session, running_engine, wait_for
from conftest import engine_config as base_config

from salon.storage.embedding import HashEmbedder
from salon.storage.knowledge import Document
from salon.storage.lance.connection import connect, retry_conflicts
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.records import TurnRecord
from salon.storage.tables import TRANSCRIPTS, TranscriptStore
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc

BUCKET = "salon-test"
WRITERS = 3
FLUSHES = 4
TURNS_PER_FLUSH = 5


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server and the settings that reach it."""

    endpoint: str

    def uri(self, prefix: str) -> str:
        """A location under the test bucket."""
        return f"s3://{BUCKET}/{prefix}"

    @property
    def options(self) -> dict[str, str]:
        """LanceDB storage options for this server."""
        return {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "allow_http": "true",
        }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server as a child process on an ephemeral loopback port, with the test bucket made."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    binary = Path(sys.executable).with_name("moto_server")
    # Its request log goes to a file: a pipe nobody reads would fill and stall the server.
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", "0"], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"Running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
            assert proc.poll() is None, f"moto_server exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.02)  # wait-ok: polls the server's log for its port, with a deadline
        endpoint = f"http://127.0.0.1:{found.group(1)}"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10).close()
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _turn(writer: int, flush: int, n: int, session: str) -> TurnRecord:
    index = flush * TURNS_PER_FLUSH + n + 1
    return TurnRecord(
        tenant_id="acme",
        session_id=session,
        turn_id=f"w{writer}f{flush}n{n}",
        incarnation="1700000000000000000",
        turn_index=index,
        status="completed",
        user_text=f"question {index} from writer {writer}",
        reply_text=f"answer {index}",
        deltas=(f"answer {index}",),
        ledger_seq=writer * 1000 + index,
    )


@contextlib.asynccontextmanager
async def _store(s3: S3Server, prefix: str, **kwargs: Any) -> AsyncIterator[TranscriptStore]:
    store = await TranscriptStore.open(s3.uri(prefix), storage_options=s3.options, **kwargs)
    try:
        yield store
    finally:
        await store.close()


async def test_several_writers_commit_to_the_same_tables_at_once_and_lose_nothing(s3: S3Server) -> None:
    prefix = "writers"
    embedder = HashEmbedder()
    async with contextlib.AsyncExitStack() as stack:
        # Each writer its own connection, as the batch writer, the memory indexer and other processes have.
        stores = [await stack.enter_async_context(_store(s3, prefix, embedder=embedder)) for _ in range(WRITERS)]
        doomed = await stack.enter_async_context(_store(s3, prefix))
        await doomed.write([_turn(9, 0, n, "doomed") for n in range(3)], [])
        acknowledged: list[str] = []

        async def writer(index: int, store: TranscriptStore) -> None:
            for flush in range(FLUSHES):
                batch = [_turn(index, flush, n, f"s{index}") for n in range(TURNS_PER_FLUSH)]
                # A redelivered record rides along: the same key from two flushes stays one row.
                await store.write([*batch, *([batch[0]] if flush else [])], [])
                acknowledged.extend(t.turn_id for t in batch)

        async def maintenance() -> None:
            # Deletes and compaction commit against the same tables while the writers insert.
            await doomed.delete_session("acme", "doomed")
            await doomed.optimize()

        started = time.monotonic()
        await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)), maintenance())
        print(
            f"{WRITERS} writers x {FLUSHES} flushes on S3 plus a delete and a compaction: "
            f"{time.monotonic() - started:.2f} s"
        )

    async with _store(s3, prefix, embedder=embedder) as fresh:
        stored = [r.turn_id for i in range(WRITERS) for r in await fresh.history("acme", f"s{i}", limit=1000)]
        assert sorted(stored) == sorted(acknowledged), "every acknowledged turn once, nothing else"
        assert len(acknowledged) == WRITERS * FLUSHES * TURNS_PER_FLUSH
        assert await fresh.count(TRANSCRIPTS, "session_id = 'doomed'") == 0
        assert await fresh.count("memories") == len(acknowledged), "one memory per completed turn"


async def test_commits_that_lose_a_race_on_s3_are_retried(s3: S3Server, caplog: pytest.LogCaptureFixture) -> None:
    # Index builds of one table at the same moment: Lance lets one commit and reports the others as
    # "Retryable commit conflict"; run through retry_conflicts, every one of them ends up done.
    uri = s3.uri("races")
    async with _store(s3, "races") as seed:
        await seed.write([_turn(0, 0, n, "race") for n in range(3)], [])
    connections = [await connect(uri, storage_options=s3.options) for _ in range(4)]
    try:
        tables = [await db.open_table(TRANSCRIPTS) for db in connections]
        with caplog.at_level(logging.INFO, logger="salon.storage.lance.connection"):
            await asyncio.gather(
                *(
                    retry_conflicts(partial(table.create_index, "session_id", replace=True), what="test index")
                    for table in tables
                )
            )
        retried = sum("lost a commit race" in r.getMessage() for r in caplog.records)
        print(f"4 concurrent index builds on S3: {retried} lost their commit race and were run again")
        assert "session_id" in {c for i in await tables[0].list_indices() for c in i.columns}
    finally:
        for db in connections:
            db.close()  # type: ignore[no-untyped-call]


async def test_two_knowledge_bases_ingest_into_one_bucket_at_once(s3: S3Server) -> None:
    embedder = HashEmbedder()
    uri = s3.uri("knowledge")
    bases = [await KnowledgeBase.open(uri, embedder, storage_options=s3.options) for _ in range(2)]
    try:

        async def ingest(index: int, base: KnowledgeBase) -> list[str]:
            async def documents() -> AsyncIterator[Document]:
                for n in range(3):
                    yield Document(document_id=f"g{index}d{n}", text=f"gateway {index} document {n} " * 30)

            return [r.document_id async for r in base.ingest("acme", documents()) if not r.error_message]

        done = await asyncio.gather(*(ingest(i, b) for i, b in enumerate(bases)))
    finally:
        for base in bases:
            await base.close()
    fresh = await KnowledgeBase.open(uri, embedder, storage_options=s3.options)
    try:
        for ids in done:
            assert len(ids) == 3
            for document_id in ids:
                assert await fresh.count_chunks("acme", document_id) > 0, document_id
    finally:
        await fresh.close()


@pytest.fixture
async def s3_engine(
    s3: S3Server, nats_url: str, ray_session: None, tmp_path: Path
) -> AsyncIterator[tuple[Any, S3Server]]:
    """An engine whose every LanceDB table is in the bucket (its hosts and writer are other processes)."""
    config = base_config(
        tmp_path / "data",
        nats_url,
        lancedb_uri=s3.uri("engine"),
        storage_endpoint=s3.endpoint,
        storage_region="us-east-1",
        storage_access_key_id="testing",
        storage_secret_access_key="testing",
        storage_allow_http=True,
        embedding_model="hash",
        flush_interval_s=0.2,
    )
    async with running_engine(config) as engine:
        yield engine, s3


async def test_an_engine_keeps_transcripts_memories_and_knowledge_in_the_bucket(
    s3_engine: tuple[Any, S3Server],
) -> None:
    engine, s3 = s3_engine
    assert engine._written_paths() == [engine.config.data_path], "no local LanceDB directory to watch"
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        knowledge = ks_grpc.KnowledgeServiceStub(channel)
        sessions = [await create_session(stub) for _ in range(3)]

        async def turns(session_id: str) -> list[str]:
            ids = []
            for n in range(3):
                events = await collect_turn(stub, session_id, f"turn {n}", timeout=60)
                assert events[-1].HasField("completed")
                ids.append(events[0].turn_id)
            return ids

        async def ingest() -> None:
            async def requests() -> AsyncIterator[ks_pb2.IngestDocumentsRequest]:
                yield ks_pb2.IngestDocumentsRequest(
                    documents=[ks_pb2.Document(document_id="manual", text="The bucket keeps every table. " * 20)]
                )

            async for _ in knowledge.IngestDocuments(requests(), timeout=60):
                pass

        # The gateway ingests while the writer (another process) stores transcripts and memories.
        *sent, _ = await asyncio.gather(*(turns(s) for s in sessions), ingest())

    async def stored() -> bool:
        await engine.writer.flush()
        async with _store(s3, "engine", embedder=HashEmbedder()) as store:
            found = [[r.turn_id for r in await store.history("default", s)] for s in sessions]
            memories = await store.count("memories")
        return found == sent and memories == sum(len(ids) for ids in sent)

    await wait_for(stored, timeout_s=60, what="every turn and its memory to be in the bucket")
    kb = await KnowledgeBase.open(s3.uri("engine"), HashEmbedder(), storage_options=s3.options)
    try:
        assert await kb.count_chunks("default", "manual") > 0
    finally:
        await kb.close()
