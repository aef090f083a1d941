"""Running one turn up to its outcome: the input guardrail, the prompt, then model rounds and their tool calls.

A turn's model may call tools: each round that does is followed by the calls' results (a client's, an MCP
server's, a person's decision; :mod:`salon.actors.tool_loop`), then another round that sees them, up to the turn's
``max_model_rounds``. A turn its host left waiting is taken up from its recorded rounds (the model is not asked
again for them). Recording the outcome is the session's part.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from salon.actors.guardrails import Guardrails
from salon.actors.model import ModelRequest
from salon.actors.model_call import ModelCall
from salon.actors.prompt import PromptBuilder
from salon.actors.running import RunningTurn
from salon.actors.tool_loop import ToolLoop
from salon.actors.tools import TOOL_ROUNDS_EXHAUSTED
from salon.actors.turn import SessionKey, SessionSettings
from salon.storage import Fenced, SalonError

log = logging.getLogger(__name__)

ENGINE_STOPPED = "the engine stopped before the turn finished"
ROUNDS_EXHAUSTED = "the model still called tools after the turn's last allowed model round"


class TurnExecution:
    """Runs a session's turns, one at a time (the session sees to that)."""

    def __init__(
        self,
        key: SessionKey,
        settings: SessionSettings,
        prompts: PromptBuilder,
        model: ModelCall,
        tools: ToolLoop,
        *,
        canary: str,
    ) -> None:
        self._key = key
        self._settings = settings
        self._prompts = prompts
        self._model = model
        self._tools = tools
        self._canary = canary
        """This activation's system-prompt canary: random, held only here (never stored or logged)."""

    async def run(self, running: RunningTurn) -> None:
        """Take ``running`` as far as it goes; its outcome says how it ended. A turn asked to stop before its
        answer began never reaches the model (one taken up again ends its waiting calls as cancelled)."""
        turn = running.turn
        running.policy = turn.tool_policy or self._settings.tool_policy
        await self._tools.resume(running)
        if running.cancel_reason:
            await self._tools.settle(running, "cancelled")
            return
        guard = Guardrails(turn.guardrails, canary=self._canary)
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
            running.output.note_released("".join(running.deltas))
        selection = running.turn.tools if running.turn.tools is not None else self._settings.tools
        offered = await self._tools.offer(running, selection)
        return dataclasses.replace(prompt.request, tools=offered)

    async def _answer(self, running: RunningTurn, request: ModelRequest) -> None:
        """The model's answer: its rounds and their tool calls."""
        try:
            await self._rounds(running, request)
        except Fenced:
            raise
        except SalonError as exc:
            # A step of the turn could not be recorded (too large for the ledger): it cannot go on durably.
            log.error("a tool step of session %s could not be recorded (%s)", self._key, exc.reason)
            await self._tools.settle(running, "cancelled")
            failed = "the turn's tool calls could not be recorded"
            running.outcome.fail(exc.reason, failed, partial=bool(running.deltas))
        except asyncio.CancelledError:
            if running.parked:
                # The session closed while the turn waited: it goes on where the session is activated next.
                self._tools.abandon(running)
                raise
            # The session is closing (after the drain grace period): the partial answer is recorded as
            # cancelled, so the turn is not run a second time.
            running.cut_short = True
            running.outcome.cancel("cancelled", ENGINE_STOPPED)
            self._tools.abandon(running)
            raise

    async def _rounds(self, running: RunningTurn, request: ModelRequest) -> None:
        """Model rounds until one calls no tool (or the turn stops, fails, or runs out of rounds)."""
        if running.calls.unanswered() and not await self._waited(running):
            return
        while True:
            number = len(running.calls.rounds) + 1
            messages = (*request.messages, *running.calls.messages(running.turn_id))
            await self._model.run(running, dataclasses.replace(request, messages=messages, prefill=running.prefill))
            if running.outcome.status != "completed" or running.cancel_reason or not running.round_calls:
                return
            if number >= running.policy.max_model_rounds:
                running.outcome.fail(TOOL_ROUNDS_EXHAUSTED, ROUNDS_EXHAUSTED, partial=bool(running.deltas))
                return
            await self._tools.start_round(running, number)
            running.round_start = len(running.deltas)
            if not await self._waited(running):
                return

    async def _waited(self, running: RunningTurn) -> bool:
        """Wait for the last round's results; whether the turn goes on to its next round."""
        await self._tools.wait(running)
        return not running.cancel_reason and running.outcome.status == "completed"
