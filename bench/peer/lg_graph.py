"""The LangGraph side's chat graph: one node that calls a chat model on the thread's messages, and a fake
chat model that streams a fixed number of tokens at once (zero model delay), like Salon's scripted provider.

``graph`` (compiled without a checkpointer) is what ``langgraph dev`` serves, since the server brings its
own; :func:`build` compiles the same graph with a checkpointer for the library in-process. Runs under the
peer venv's Python only (LangGraph is not a dependency of the engine). The answer's length comes from
``PEER_TOKENS`` (64 when unset), so the server started by the harness streams what the harness expects.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog")


def answer_tokens(count: int) -> list[str]:
    """The scripted answer, one string per token: the words above, cycled, each with its space."""
    return [WORDS[i % len(WORDS)] + " " for i in range(count)]


class FakeStreamingChat(BaseChatModel):
    """A chat model that answers every prompt with ``tokens`` tokens, streamed one chunk per token."""

    tokens: int = 64

    @property
    def _llm_type(self) -> str:
        return "peer-fake-streaming"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(answer_tokens(self.tokens))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for token in answer_tokens(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for token in answer_tokens(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def build(checkpointer: BaseCheckpointSaver[Any] | None, tokens: int) -> CompiledStateGraph[Any]:
    """The minimal chat graph: START → chat, the node appending the model's answer to the thread's messages."""
    model = FakeStreamingChat(tokens=tokens)

    async def chat(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    return builder.compile(checkpointer=checkpointer)


graph = build(None, int(os.environ.get("PEER_TOKENS", "64")))
