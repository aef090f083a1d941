"""Embeddings: the bundled offline model (pinned files, similarity that means something, off the event
loop) and the hash embedder the other unit tests use."""

from __future__ import annotations

import asyncio
import hashlib
import math
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from salon.storage.embedding import (
    MODEL_DIM,
    MODEL_FILE,
    MODEL_PACKAGE,
    MODEL_SHA256,
    TOKENIZER_FILE,
    TOKENIZER_PACKAGE,
    TOKENIZER_SHA256,
    EmbeddingUnavailable,
    HashEmbedder,
    OnnxEmbedder,
    _package_file,
    default_embedder,
)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(a: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in a))


@pytest.fixture(scope="module")
def model() -> OnnxEmbedder:
    return default_embedder()


def test_the_installed_files_match_the_pinned_hashes() -> None:
    for package, relative, expected in (
        (MODEL_PACKAGE, MODEL_FILE, MODEL_SHA256),
        (TOKENIZER_PACKAGE, TOKENIZER_FILE, TOKENIZER_SHA256),
    ):
        path = _package_file(package, relative)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    model = _package_file(MODEL_PACKAGE, MODEL_FILE)
    tokenizer = _package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(model, tampered)
    with tampered.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbeddingUnavailable, match="SHA-256"):
        OnnxEmbedder(tampered, tokenizer)
    changed_tokenizer = tmp_path / "tokenizer.json"
    changed_tokenizer.write_text(tokenizer.read_text() + " ")
    with pytest.raises(EmbeddingUnavailable, match="SHA-256"):
        OnnxEmbedder(model, changed_tokenizer)


def test_a_missing_package_is_reported() -> None:
    with pytest.raises(EmbeddingUnavailable, match="not installed"):
        _package_file("salon-no-such-package", "x")


def test_the_default_embedder_is_loaded_once_even_from_many_threads() -> None:
    seen: list[OnnxEmbedder] = []
    threads = [threading.Thread(target=lambda: seen.append(default_embedder())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1
    assert seen[0] is default_embedder()
    assert seen[0].dim == MODEL_DIM
    assert seen[0].model_id.endswith(MODEL_SHA256[:12])


async def test_vectors_are_normalised_and_of_the_model_dimension(model: OnnxEmbedder) -> None:
    vectors = await model.embed(["hello", "a longer sentence about the weather in Lisbon", ""])
    assert len(vectors) == 3
    for v in vectors:
        assert len(v) == MODEL_DIM
        assert norm(v) == pytest.approx(1.0, abs=1e-4)
    assert await model.embed([]) == []


async def test_related_sentences_are_closer_than_unrelated_ones(model: OnnxEmbedder) -> None:
    anchor, related, unrelated = await model.embed(
        [
            "My dog is called Biscuit and loves the beach.",
            "What is the name of my dog?",
            "Quarterly revenue grew by ten percent in Europe.",
        ]
    )
    assert cosine(anchor, related) > cosine(anchor, unrelated) + 0.2
    refund, question, shipping = await model.embed(
        [
            "Customers can get their money back within 30 days of purchase.",
            "How long do I have to ask for a refund?",
            "We ship parcels to the EU and the UK.",
        ]
    )
    assert cosine(question, refund) > cosine(question, shipping)


async def test_batching_does_not_change_the_vectors(model: OnnxEmbedder) -> None:
    # Lengths vary, so the embedder reorders the texts into batches by length: order must come back intact.
    texts = [f"sentence {i} about {'cats ' * (i % 7) if i % 2 else 'the stock market'}" for i in range(40)]
    batched = await model.embed(texts)
    singles = [(await model.embed([t]))[0] for t in texts[:5]] + [(await model.embed([texts[39]]))[0]]
    for single, index in zip(singles, [0, 1, 2, 3, 4, 39], strict=True):
        assert cosine(single, batched[index]) > 0.999


async def test_long_texts_are_truncated_not_refused(model: OnnxEmbedder) -> None:
    head = "The meeting is on Tuesday at noon in room four. "
    (long_vector, head_vector) = await model.embed([head * 400, head * 20])
    assert norm(long_vector) == pytest.approx(1.0, abs=1e-4)
    # Both are cut at 256 word pieces of the same repeated text, so they embed alike.
    assert cosine(long_vector, head_vector) > 0.99


async def test_embedding_runs_off_the_event_loop(model: OnnxEmbedder) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)  # wait-ok: yields to the event loop once

    task = asyncio.create_task(ticker())
    try:
        await model.embed([f"text number {i} " * 30 for i in range(64)])
    finally:
        done.set()
        await task
    # Had inference run on the loop, the ticker could not have run until it finished.
    assert ticks > 10


async def test_hash_embedder_is_deterministic_normalised_and_lexical() -> None:
    embedder = HashEmbedder(dim=64)
    first, again, related, unrelated, empty = await embedder.embed(
        ["The cat sat on the mat", "the CAT sat on the mat", "a cat on a mat", "quarterly revenue grew", ""]
    )
    assert first == again
    for v in (first, related, unrelated, empty):
        assert len(v) == 64
        assert norm(v) == pytest.approx(1.0)
    assert cosine(first, related) > cosine(first, unrelated)
    assert HashEmbedder(dim=64).model_id != HashEmbedder(dim=32).model_id
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(dim=1)
