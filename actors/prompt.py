"""Prompt assembly: the window of recent messages, the rolling summary, retrieved passages (checked by the
injection guardrail), the guardrail canary and the new message, with the record of what entered the prompt.

A turn continued after its host died keeps to the citations the earlier attempt sent: the client has them,
so the prompt holds exactly those passages, in that order, and the record names them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.trace import Span

from salon import otel
from salon.actors.context import PassageEntry, TurnContext, explain, within_budget
from salon.actors.events import Citation
from salon.actors.guardrails import Guardrails, with_canary
from salon.actors.memory import estimate_tokens, fit_window
from salon.actors.model import Message, ModelRequest
from salon.actors.state import SessionState
from salon.actors.turn import SessionKey, SessionSettings
from salon.storage import GuardrailDecision, Passage, RetrievalQuery, Retriever, SalonError

log = logging.getLogger(__name__)

RETRIEVAL_TIMEOUT_S = 5.0
"""Longest a turn waits for retrieval before it goes on without passages."""
RETRIEVER_OPEN_WAIT_S = 30.0
"""How long a turn waits for a retriever still opening its tables (a host opens them in the background after it
reports ready) before it goes on without passages; the query itself then has ``RETRIEVAL_TIMEOUT_S``, or this
long again while the embedding model is not yet in memory (loaded on a host's first query that needs it)."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """A turn's prompt and what is known about it."""

    request: ModelRequest
    context: TurnContext
    """What entered the prompt, with token counts (the turn's record keeps it)."""
    flagged: tuple[GuardrailDecision, ...] = ()
    """The injection guardrail's decisions about the retrieved passages."""


class PromptBuilder:
    """Builds a session's prompts from its settings, its state and its retriever."""

    def __init__(
        self, key: SessionKey, settings: SessionSettings, state: SessionState, retriever: Retriever | None
    ) -> None:
        self._key = key
        self._settings = settings
        self._state = state
        self._retriever = retriever

    def window(self) -> list[Message]:
        """The recent messages that enter the next prompt verbatim."""
        s = self._settings
        # One message of the budget is the new one.
        return fit_window(
            self._state.messages, max_messages=max(s.window_max_messages - 1, 0), token_budget=s.window_token_budget
        )

    async def build(
        self, user_text: str, prefill: str, guard: Guardrails, pinned: Sequence[Citation] | None = None
    ) -> Prompt:
        """The prompt for ``user_text`` (continuing after ``prefill``). Under ``block`` the passages the
        injection guardrail flags stay out of it. ``pinned``: the citations an earlier attempt at the turn
        sent (see the module's docstring); None: none were fixed."""
        with otel.span(otel.attributes.SPAN_CONTEXT) as span:
            window = self.window()
            passages, error_reason = await self._passages(user_text, window, pinned)
            flagged = guard.check_passages([p.text for p in passages])
            blocked = {d.passage for d in flagged if d.action == "block"}
            passages = [p for i, p in enumerate(passages) if i not in blocked]
            system, context = explain(
                instructions=self._settings.system_prompt,
                summary=self._state.summary,
                passages=passages,
                window=window,
                user_text=user_text,
                retrieval_error_reason=error_reason,
                count_tokens=self.count_tokens,
            )
            if pinned is not None:
                context = dataclasses.replace(context, passages=_pinned_entries(pinned, context.passages))
            if span.is_recording():
                span.set_attribute(otel.attributes.CONTEXT_WINDOW_MESSAGES, len(window))
                span.set_attribute(otel.attributes.CONTEXT_PROMPT_TOKENS, context.total_tokens)
        request = self._request(
            system, guard, window=window, user_text=user_text, prefill=prefill, context=context, passages=passages
        )
        return Prompt(request, context, tuple(flagged))

    def _request(
        self,
        system: str,
        guard: Guardrails,
        *,
        window: Sequence[Message],
        user_text: str,
        prefill: str,
        context: TurnContext,
        passages: Sequence[Passage],
    ) -> ModelRequest:
        s = self._settings
        canary_line = ""
        if guard.settings.canary:
            system, canary_line = with_canary(system, guard.canary)
        return ModelRequest(
            system=system,
            canary_line=canary_line,
            messages=(*window, Message("user", user_text)),
            model=s.model,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            stop_sequences=s.stop_sequences,
            prefill=prefill,
            provider=s.provider,
            fallback_providers=s.fallback_providers,
            instructions=s.system_prompt,
            summary=context.summary.text,
            passages=tuple(passages),
        )

    async def _passages(
        self, text: str, window: Sequence[Message], pinned: Sequence[Citation] | None
    ) -> tuple[list[Passage], str]:
        """The retrieved passages for the prompt (the pinned ones, when some are), and why retrieval failed."""
        if pinned is not None and not pinned:
            return [], ""
        passages, error_reason = await self._retrieve(text, window)
        if pinned is not None:
            found = {(p.source, p.chunk_id): p for p in passages}
            return [found[(c.source, c.chunk_id)] for c in pinned if (c.source, c.chunk_id) in found], error_reason
        # The budget applies to a new choice only: pinned citations were sent already and the prompt keeps them.
        return within_budget(passages, self._settings.retrieval_token_budget, self.count_tokens), error_reason

    @property
    def count_tokens(self) -> Callable[[str], int]:
        """How passage tokens are counted: the embedding model's tokenizer once the retriever has it loaded,
        else the estimate of characters / 4."""
        counter = getattr(self._retriever, "count_tokens", None)
        return counter if callable(counter) else estimate_tokens

    async def _retrieve(self, text: str, window: Sequence[Message]) -> tuple[list[Passage], str]:
        """Passages for ``text``: the tenant's knowledge and this session's memories outside ``window``. A
        failure degrades the turn (no passages, the reason recorded) instead of failing it."""
        if self._retriever is None or self._settings.retrieval_top_k <= 0:
            return [], ""
        query = self._query(text, window)
        with otel.span(otel.attributes.SPAN_RETRIEVAL) as span:
            try:
                await self._opened()
                found = await asyncio.wait_for(self._retriever.retrieve(query), timeout=self._query_limit())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _failure_reason(exc)
                log.warning(
                    "retrieval failed for session %s (%s); the turn goes on without passages",
                    self._key,
                    reason,
                )
                if span.is_recording():
                    span.set_attribute("error.type", reason)
                return [], reason
            passages = self._admissible(found, query.exclude_turn_ids)
            if span.is_recording():
                _trace_retrieval(span, passages)
        return passages, ""

    async def _opened(self) -> None:
        """Wait (up to ``RETRIEVER_OPEN_WAIT_S``) for a retriever that is still opening its tables: on a busy
        machine importing LanceDB alone can outlast a query's timeout, and the first turns after a start must
        retrieve all the same. A retriever that is always open (or cannot say) is not waited for."""
        assert self._retriever is not None
        if getattr(self._retriever, "opened", True):
            return
        ready = getattr(self._retriever, "ready", None)
        if callable(ready):
            await asyncio.wait_for(ready(), timeout=RETRIEVER_OPEN_WAIT_S)

    def _query_limit(self) -> float:
        """The query's time limit: longer while the embedding model is still to be loaded (onnxruntime and the
        weights: seconds on a busy machine), so the first turns after a start or an ingestion still retrieve."""
        embedder = getattr(self._retriever, "embedder", None)
        loading = embedder is not None and not getattr(embedder, "loaded", True)
        return RETRIEVER_OPEN_WAIT_S if loading else RETRIEVAL_TIMEOUT_S

    def _query(self, text: str, window: Sequence[Message]) -> RetrievalQuery:
        s = self._settings
        excluded = frozenset(m.turn_id for m in window if m.turn_id)
        # While every turn of the session is still in the window there is no memory to find: no search (unless
        # the user's other sessions are searched too).
        past_window = s.user_memory or self._state.turn_count > len(excluded)
        return RetrievalQuery(
            tenant_id=self._key.tenant_id,
            session_id=self._key.session_id,
            text=text,
            top_k=s.retrieval_top_k,
            min_score=s.retrieval_min_score,
            exclude_turn_ids=excluded,
            include_memory=s.long_term_memory and past_window,
            memory_user_id=s.user_id if s.user_memory else "",
            collections=s.knowledge_collections,
        )

    def _admissible(self, found: Sequence[Passage], excluded: frozenset[str]) -> list[Passage]:
        # The retriever applies these already; checked again because they are this session's promises.
        s = self._settings
        return [
            p
            for p in found
            if p.score >= s.retrieval_min_score
            and (p.source == "knowledge" or (s.long_term_memory and p.chunk_id not in excluded))
        ][: s.retrieval_top_k]


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, SalonError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "RETRIEVAL_TIMEOUT"
    return "RETRIEVAL_FAILED"


def _trace_retrieval(span: Span, passages: Sequence[Passage]) -> None:
    attrs = otel.attributes
    span.set_attribute(attrs.RETRIEVAL_PASSAGES, len(passages))
    span.set_attribute(attrs.RETRIEVAL_MEMORIES, sum(1 for p in passages if p.source == "memory"))
    span.set_attribute(attrs.RETRIEVAL_CHUNKS, sum(1 for p in passages if p.source == "knowledge"))


def _pinned_entries(pinned: Sequence[Citation], in_prompt: Sequence[PassageEntry]) -> tuple[PassageEntry, ...]:
    """The record's passages for citations already sent: exactly those, with the token counts of the ones
    the prompt holds (0 for one no longer found)."""
    tokens = {(p.source, p.chunk_id): p for p in in_prompt}
    entries = []
    for c in pinned:
        match = tokens.get((c.source, c.chunk_id))
        entries.append(
            PassageEntry(
                source=c.source,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                score=c.score,
                table_version=c.table_version,
                title=c.title,
                turn_index=match.turn_index if match else 0,
                tokens=match.tokens if match else 0,
            )
        )
    return tuple(entries)
