"""How the load generator talks to LangGraph: the library in-process (a checkpointer, ``astream`` with
``stream_mode="messages"``) and ``langgraph dev`` over its HTTP API through the official SDK
(``POST /threads``, then ``POST /threads/{id}/runs/stream`` with ``stream_mode="messages-tuple"``, read as
Server-Sent Events). Runs under the peer venv's Python."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk.client import LangGraphClient

from bench.peer.lg_graph import build
from bench.peer.load import Conversation, TurnFailed

ASSISTANT = "chat"
"""The graph's name in the generated langgraph.json (the server's default assistant for it)."""


async def _time_tokens(texts: AsyncIterator[str], expected: int) -> float:
    """Time to the first non-empty piece of ``texts``; checks that the whole answer is ``expected`` words."""
    start = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    async for text in texts:
        if text:
            if first is None:
                first = time.perf_counter()
            pieces.append(text)
    words = len("".join(pieces).split())
    if first is None or words != expected:
        raise TurnFailed(f"expected {expected} words, got {words}")
    return first - start


class _LibraryThread:
    def __init__(self, graph: Any, tokens: int) -> None:
        self.graph = graph
        self.tokens = tokens
        self.config = {"configurable": {"thread_id": uuid.uuid4().hex}}

    async def _texts(self, text: str) -> AsyncIterator[str]:
        stream = self.graph.astream({"messages": [HumanMessage(content=text)]}, self.config, stream_mode="messages")
        async for chunk, _metadata in stream:
            yield chunk.content if isinstance(chunk.content, str) else ""

    async def turn(self, text: str) -> float:
        return await _time_tokens(self._texts(text), self.tokens)


class LibraryTarget:
    """The LangGraph library in this process: one compiled graph with an in-memory checkpointer, a thread per
    session."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.graph = build(InMemorySaver(), tokens)

    async def open(self) -> Conversation:
        """A new thread."""
        return _LibraryThread(self.graph, self.tokens)

    async def close(self) -> None:
        """Nothing to release."""


class _ServerThread:
    def __init__(self, client: LangGraphClient, thread_id: str, tokens: int) -> None:
        self.client = client
        self.thread_id = thread_id
        self.tokens = tokens

    async def _texts(self, text: str) -> AsyncIterator[str]:
        graph_input: dict[str, Any] = {"messages": [{"type": "human", "content": text}]}
        parts = self.client.runs.stream(self.thread_id, ASSISTANT, input=graph_input, stream_mode="messages-tuple")
        async for part in parts:
            if part.event == "error":
                raise TurnFailed(f"error event: {str(part.data)[:200]}")
            if part.event == "messages":
                chunk = part.data[0]
                content = chunk.get("content") if isinstance(chunk, dict) else None
                yield content if isinstance(content, str) else ""

    async def turn(self, text: str) -> float:
        return await _time_tokens(self._texts(text), self.tokens)


class DevServerTarget:
    """A running ``langgraph dev``, through the SDK's client on one HTTP connection pool without a cap (the
    SDK's default pool holds 100 connections and gives up after 5 s of waiting for one)."""

    def __init__(self, url: str, tokens: int, timeout_s: float) -> None:
        self.tokens = tokens
        http = httpx.AsyncClient(
            base_url=url,
            transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None)),
            timeout=httpx.Timeout(timeout_s),
        )
        self.client = LangGraphClient(http)

    async def open(self) -> Conversation:
        """A new thread on the server."""
        thread = await self.client.threads.create()
        return _ServerThread(self.client, str(thread["thread_id"]), self.tokens)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()
