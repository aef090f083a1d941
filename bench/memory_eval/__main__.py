"""Recall of long-term memory retrieval on generated conversations, per kind of question.

Each conversation of :mod:`bench.memory_eval.generate` becomes one session's long-term memory: every dialog
turn a row of a real LanceDB ``memories`` table, written as the engine writes it (``memory_text`` with the
speaker and the date, embedded by the engine's embedder, the engine's indexes). Each question then goes
through ``LanceRetriever.retrieve`` (the engine's hybrid search and fusion) with the session as prefilter,
asked at the conversation's question time, and recall@k is the share of its evidence turns among the first
k passages. Printed per kind (single, paraphrase, two-fact, date) with the p50 latency of a retrieval.

    python -m bench.memory_eval                      # the default set: 8 conversations, seed 7
    python -m bench.memory_eval --text plain         # the text as indexed before (no speaker, no date)
    python -m bench.memory_eval --embedder hash      # the bag-of-words stand-in, for a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from bench.common import load_average, percentile, positive_int
from bench.memory_eval.generate import KINDS, Conversation, generate
from salon.actors.context import passage_text, within_budget
from salon.actors.memory import estimate_tokens
from salon.storage import RetrievalQuery, TurnRecord, build_embedder, retrieval
from salon.storage.embedding import Embedder
from salon.storage.lance.memories import memories_to_batch, memory_text, memory_words
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.tables import create_missing_indexes, memories_spec, open_table

TENANT = "eval"
K_VALUES = (1, 5, 10, 25)
BUDGET_TOP_K = (10, 25)
"""Passage counts whose recall is also reported under each ``--budgets`` token budget."""


@dataclass(slots=True)
class Scores:
    """Recall@k of each question of one kind, and retrieval latencies."""

    recalls: dict[int, list[float]] = field(default_factory=lambda: {k: [] for k in K_VALUES})
    budgeted: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    """(top_k, token budget) -> recall of the passages a prompt would hold."""


def turn_records(conversation: Conversation) -> list[TurnRecord]:
    """The conversation's dialog turns as the engine records turns (one speaker's words per turn)."""
    return [
        TurnRecord(
            tenant_id=TENANT,
            session_id=conversation.conversation_id,
            turn_id=t.turn_id,
            incarnation="eval",
            turn_index=t.index,
            status="completed",
            user_text=t.text,
            reply_text="",
            completed_at_ns=int(t.at.timestamp() * 1e9),
        )
        for t in conversation.turns
    ]


def indexed_texts(conversation: Conversation, records: Sequence[TurnRecord], text_format: str) -> list[str]:
    """What is indexed of each turn: the engine's text (speaker and date), or the text of before."""
    if text_format == "plain":
        return [f"User: {r.user_text}\nAssistant: {r.reply_text}" for r in records]
    return [memory_text(r, speaker=t.speaker) for t, r in zip(conversation.turns, records, strict=True)]


def embedded_texts(
    conversation: Conversation, records: Sequence[TurnRecord], texts: list[str], vector_text: str
) -> list[str]:
    """What is embedded of each turn: the indexed text, the words alone, or the speaker and the words."""
    if vector_text == "words":
        return [memory_words(r) for r in records]
    if vector_text == "speaker":
        return [f"{t.speaker}: {t.text}" for t in conversation.turns]
    return texts


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Index every conversation, ask every question; the figures as a JSON-ready dict."""
    conversations = generate(args.seed, args.conversations)
    embedder: Embedder = await asyncio.to_thread(build_embedder, args.embedder)
    scores = {kind: Scores() for kind in KINDS}
    latencies: list[float] = []
    # Recall of what a prompt would hold: the first top_k passages within a token budget (as the engine
    # counts them: the embedding model's word pieces of the text as it enters the prompt).
    count: Callable[[str], int] = getattr(embedder, "count_tokens", None) or estimate_tokens
    budgeted = [(top_k, budget) for top_k in BUDGET_TOP_K for budget in args.budgets]
    for s in scores.values():
        s.budgeted = {key: [] for key in budgeted}
    passage_tokens: list[int] = []
    turns = sum(len(c.turns) for c in conversations)
    questions = sum(len(c.questions) for c in conversations)
    with tempfile.TemporaryDirectory(prefix="memory-eval-") as uri, Progress(transient=True) as progress:
        indexing = progress.add_task("indexing turns", total=turns)
        db_spec = memories_spec(embedder.dim)
        import lancedb

        db = await lancedb.connect_async(uri)
        table = await open_table(db, db_spec)
        for conversation in conversations:
            records = turn_records(conversation)
            texts = indexed_texts(conversation, records, args.text)
            embedded = embedded_texts(conversation, records, texts, args.vector_text)
            vectors: list[list[float]] = []
            for start in range(0, len(texts), 64):
                vectors += await embedder.embed(embedded[start : start + 64])
                progress.advance(indexing, min(64, len(texts) - start))
            batch = memories_to_batch(records, vectors, dim=embedder.dim, model_id=embedder.model_id, texts=texts)
            await table.add(batch)
        await create_missing_indexes(table, db_spec)
        table.close()  # type: ignore[no-untyped-call]
        db.close()  # type: ignore[no-untyped-call]
        retriever = await LanceRetriever.open(uri, embedder)
        try:
            asking = progress.add_task("asking questions", total=questions)
            for conversation in conversations:
                for question in conversation.questions:
                    query = RetrievalQuery(
                        tenant_id=TENANT,
                        session_id=conversation.conversation_id,
                        text=question.text,
                        top_k=max(K_VALUES),
                        min_score=args.min_score,
                        include_knowledge=False,
                        now_ns=int(conversation.asked_at.timestamp() * 1e9),
                    )
                    started = time.perf_counter()
                    found = await retriever.retrieve(query)
                    latencies.append((time.perf_counter() - started) * 1000)
                    ranked = [p.chunk_id for p in found]
                    for k in K_VALUES:
                        hits = len(question.evidence & set(ranked[:k]))
                        scores[question.kind].recalls[k].append(hits / len(question.evidence))
                    passage_tokens += [count(passage_text(p)) for p in found[:10]]
                    for top_k, budget in budgeted:
                        kept = {p.chunk_id for p in within_budget(found[:top_k], budget, count)}
                        hits = len(question.evidence & kept)
                        scores[question.kind].budgeted[(top_k, budget)].append(hits / len(question.evidence))
                    progress.advance(asking)
        finally:
            await retriever.close()
    return {
        "embedder": embedder.model_id,
        "text": args.text,
        "vector_text": args.vector_text,
        "vector_weight": retrieval.VECTOR_WEIGHT,
        "min_score": args.min_score,
        "seed": args.seed,
        "conversations": len(conversations),
        "turns": turns,
        "questions": questions,
        "retrieve_p50_ms": round(percentile(latencies, 50), 2),
        "passage_tokens": {
            "p50": round(percentile(passage_tokens, 50)),
            "p90": round(percentile(passage_tokens, 90)),
            "max": max(passage_tokens, default=0),
        },
        "budgeted_recall": {
            f"top{top_k}/{budget}": {kind: round(_mean(s.budgeted[(top_k, budget)]), 3) for kind, s in scores.items()}
            | {"all": round(_mean([r for s in scores.values() for r in s.budgeted[(top_k, budget)]]), 3)}
            for top_k, budget in budgeted
        },
        "recall": {
            kind: {"n": len(s.recalls[1]), **{f"@{k}": round(_mean(s.recalls[k]), 3) for k in K_VALUES}}
            for kind, s in scores.items()
        }
        | {"all": {f"@{k}": round(_mean([r for s in scores.values() for r in s.recalls[k]]), 3) for k in K_VALUES}},
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the evaluation and print its table (``--json``: the figures as JSON too)."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--conversations", type=positive_int, default=8)
    parser.add_argument("--embedder", choices=("default", "hash"), default="default")
    parser.add_argument("--text", choices=("dated", "plain"), default="dated")
    parser.add_argument(
        "--vector-text",
        choices=("words", "indexed", "speaker"),
        default="words",
        help="what is embedded: the words alone (the engine's), the indexed text, or the speaker and the words",
    )
    parser.add_argument(
        "--vector-weight",
        type=float,
        default=None,
        help="override the fusion's weight of the cosine term (to choose it; the engine's is the default)",
    )
    parser.add_argument("--min-score", type=float, default=0.0, help="the retrieval's relevance cut-off")
    parser.add_argument(
        "--budgets",
        type=lambda text: [positive_int(v) for v in text.split(",")],
        default=[250, 500, 1000, 2000, 4000],
        help="passage token budgets (comma separated) whose recall is reported at 10 and 25 passages",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON after the table")
    args = parser.parse_args(argv)
    if args.vector_weight is not None:
        # The fusion reads its weights from its module at each call: set them for this run only.
        retrieval.VECTOR_WEIGHT = args.vector_weight  # type: ignore[misc]
        retrieval.LEXICAL_WEIGHT = 1.0 - args.vector_weight  # type: ignore[misc]
    load_before = load_average()
    result = asyncio.run(evaluate(args))
    result["command"] = shlex.join(["python", "-m", "bench.memory_eval", *(argv or sys.argv[1:])])
    result["load"] = f"{load_before} -> {load_average()}"
    print(f"{result['command']}  ({result['embedder']}, {result['turns']} turns, {result['questions']} questions)")
    print(f"{'kind':<11} {'n':>4} " + " ".join(f"{'R@' + str(k):>6}" for k in K_VALUES))
    for kind, row in result["recall"].items():
        n = row.get("n", result["questions"])
        print(f"{kind:<11} {n:>4} " + " ".join(f"{row[f'@{k}']:>6.3f}" for k in K_VALUES))
    tokens = result["passage_tokens"]
    print(f"passage tokens p50 {tokens['p50']}, p90 {tokens['p90']}, max {tokens['max']}")
    for key, row in result["budgeted_recall"].items():
        top_k, budget = key.removeprefix("top").split("/")
        print(f"{top_k:>3} passages within {budget:>5} tokens: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()))
    print(f"retrieve p50 {result['retrieve_p50_ms']} ms; load {result['load']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
