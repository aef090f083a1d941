"""Running one turn up to its outcome: the input guardrail, the prompt, then the model.

The steps are separate so that later ones can be added between them (a turn whose model calls tools runs
several model rounds and may wait for their results). Recording the outcome is the session's part.
"""

from __future__ import annotations

import asyncio
import logging

from actors.guardrails import Guardrails
from actors.model import ModelRequest
from actors.model_call import ModelCall
from actors.prompt import PromptBuilder
from actors.running import RunningTurn
from actors.turn import SessionKey

log = logging.getLogger(__name__)

ENGINE_STOPPED = "the engine stopped before the turn finished"


class TurnExecution:
    """Runs a session's turns, one at a time (the session sees to that)."""

    def __init__(self, key: SessionKey, prompts: PromptBuilder, model: ModelCall, canary: str) -> None:
        self._key = key
        self._prompts = prompts
        self._model = model
        self._canary = canary
        """This activation's system-prompt canary: random, held only here (never stored or logged)."""

    async def run(self, running: RunningTurn) -> None:
        """Take ``running`` as far as it goes; its outcome says how it ended. A turn asked to stop before its
        answer began never reaches the model."""
        if running.cancel_reason:
            return
        guard = Guardrails(running.turn.guardrails, canary=self._canary)
        if await self._refuse_input(running, guard):
            return
        request = await self._prepare(running, guard)
        if not running.cancel_reason:
            await self._answer(running, request)

    async def _refuse_input(self, running: RunningTurn, guard: Guardrails) -> bool:
        """Check the user's message; True when the injection guardrail blocks the turn."""
        decision = guard.check_user_text(running.turn.text)
        if decision is None:
            return False
        running.guardrails.append(decision)
        if decision.action != "block":
            return False
        await running.notify_input()
        log.warning(
            "guardrail blocked a turn of session %s: prompt injection (score %.2f, rules %s)",
            self._key,
            decision.score,
            ",".join(decision.rules),
        )
        refused = "the message was refused by the prompt-injection guardrail"
        running.outcome.fail("PROMPT_INJECTION", refused, partial=False)
        return True

    async def _prepare(self, running: RunningTurn, guard: Guardrails) -> ModelRequest:
        """Build the prompt, note what entered it, and send what comes before the first token: one notice about
        the input (the message and the passages, as a replay of the record sends it), then the citations."""
        pinned = running.pinned_citations()
        prompt = await self._prompts.build(running.turn.text, running.prefill, guard, pinned)
        running.guardrails.extend(prompt.flagged)
        await running.notify_input()
        context = prompt.context
        running.context_turn_ids = tuple(dict.fromkeys(w.turn_id for w in context.window if w.turn_id))
        running.context_json = context.to_json()
        if context.passages and pinned is None:
            await running.emitter.citations(context.passages)
        running.output = guard.output_guard()
        if running.deltas:
            running.output.note_released(running.prefill)
        return prompt.request

    async def _answer(self, running: RunningTurn, request: ModelRequest) -> None:
        """The model's answer (one round: the model calls no tools yet)."""
        try:
            await self._model.run(running, request)
        except asyncio.CancelledError:
            # The session is closing (after the drain grace period): the partial answer is recorded as
            # cancelled, so the turn is not run a second time.
            running.cut_short = True
            running.outcome.cancel("cancelled", ENGINE_STOPPED)
            raise
