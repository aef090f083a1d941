"""Attribute and span names, in one place: the OpenTelemetry semantic conventions where one exists (GenAI,
messaging), ``salon.*`` for the engine's own."""

from __future__ import annotations

# Salon's own.
TURN_ID = "salon.turn_id"
SESSION_ID = "salon.session_id"
TENANT_ID = "salon.tenant_id"
SHARD = "salon.shard"
TURN_STATUS = "salon.turn.status"
QUEUE_WAIT_MS = "salon.queue_wait_ms"
TTFT_MS = "salon.time_to_first_token_ms"
BATCH_ROWS = "salon.batch.rows"
GUARDRAIL_DECISIONS = "salon.guardrail.decisions"
"""How many guardrail decisions the turn had (on the session's turn span)."""
GUARDRAIL_REDACTIONS = "salon.guardrail.redactions"
GUARDRAIL_BLOCKED = "salon.guardrail.blocked"
"""The reason of the guardrail that ended the turn (PROMPT_INJECTION, SYSTEM_PROMPT_LEAK)."""
EVENT_GUARDRAIL = "salon.guardrail"
"""Span event, one per decision, with the attributes below (never the matched text)."""
GUARDRAIL_CHECK = "salon.guardrail.check"
GUARDRAIL_ACTION = "salon.guardrail.action"
GUARDRAIL_REASON = "salon.guardrail.reason"
GUARDRAIL_SOURCE = "salon.guardrail.source"
GUARDRAIL_COUNT = "salon.guardrail.count"
GUARDRAIL_SCORE = "salon.guardrail.score"
GUARDRAIL_RULES = "salon.guardrail.rules"
BATCH_TRACE_IDS = "salon.batch.trace_ids"
"""Trace ids of the turns a batch write holds: ledger records carry a trace id but no span id, so the batch
span names its turns' traces instead of linking to their spans."""

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
"""``function`` (the client runs it) or ``extension`` (an MCP server runs it)."""
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
"""Opt-in (content): the call's arguments, as JSON text."""
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
"""Opt-in (content): the call's result."""
ERROR_TYPE = "error.type"
OPERATION_EXECUTE_TOOL = "execute_tool"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
"""Opt-in (content): the system prompt."""
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
"""Opt-in (content): the messages sent to the model, as JSON."""
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
"""Opt-in (content): the answer, as JSON."""
CONTENT_ATTRIBUTES = (
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_TOOL_CALL_ARGUMENTS,
    GEN_AI_TOOL_CALL_RESULT,
)
"""The only attributes that may hold message content, and only when capture is enabled."""

# Messaging semantic conventions.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION = "messaging.operation.type"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"

# Span names.
SPAN_GATEWAY_SEND_TURN = "salon.gateway.SendTurn"
SPAN_TURN_PUBLISH = "salon.turns publish"
SPAN_HOST_TURN = "salon.host.turn"
SPAN_SESSION_TURN = "salon.session.turn"
SPAN_LEDGER_APPEND = "salon.ledger append"
SPAN_EVENTS_PUBLISH = "salon.events publish"
SPAN_BATCH_WRITE = "salon.batch.write"
SPAN_CONTEXT = "salon.context assembly"
SPAN_RETRIEVAL = "salon.retrieval"

# Tool calls (the execute_tool spans add these to the GenAI ones).
TOOL_SERVER = "salon.tool.mcp_server"
TOOL_ROUND = "salon.tool.round"
TOOL_SOURCE = "salon.tool.source"
"""Where the result came from: client, mcp, rejected, timeout, invalid_call, cancelled."""
TOOL_REQUIRES_APPROVAL = "salon.tool.requires_approval"
TOOL_APPROVED = "salon.tool.approved"
TOOL_OUTCOME = "salon.tool.outcome"
"""Metric attribute: ok, error, rejected, timeout, invalid, cancelled."""
TURN_MODEL_ROUNDS = "salon.turn.model_rounds"
TURN_TOOL_CALLS = "salon.turn.tool_calls"

# Context assembly and retrieval (counts only, never content).
RETRIEVAL_PASSAGES = "salon.retrieval.passages"
RETRIEVAL_MEMORIES = "salon.retrieval.memories"
RETRIEVAL_CHUNKS = "salon.retrieval.chunks"
CONTEXT_WINDOW_MESSAGES = "salon.context.window_messages"
CONTEXT_PROMPT_TOKENS = "salon.context.prompt_tokens"
