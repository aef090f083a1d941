"""Checking tools and tool calls: the definitions a session offers, the calls a model makes, the results that
come back.

Definitions come from callers (CreateSession, SendTurn) and from MCP servers, so they are refused with
:class:`InvalidTool` (reason ``INVALID_TOOL``), whose message names the tool but never repeats its schema or
description. Calls come from the model: :func:`validate_call` checks one against its tool's schema before any
client or server sees it, and answers a bad call with a :class:`~salon.actors.model.ToolResult` error that goes back
to the model, which may then call again. Results come from clients and MCP servers and are bounded in size.

Plain functions over the contract in :mod:`salon.actors.model`; no I/O. The hosts validate arguments, the gateway
validates definitions, and both use this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from referencing.exceptions import Unresolvable

from salon.actors.model import ToolCall, ToolResult, ToolSpec
from salon.storage.errors import InvalidArgument
from salon.storage.reasons import Reason

# Reasons (UPPER_SNAKE_CASE, as in ``salon-error-reason``) this module and the action layer use.
INVALID_TOOL = Reason.INVALID_TOOL
"""A tool definition is refused (name, description, schema, duplicate)."""
TOO_MANY_TOOLS = Reason.TOO_MANY_TOOLS
"""More tools than a turn may offer."""
UNKNOWN_MCP_SERVER = Reason.UNKNOWN_MCP_SERVER
"""A tool or tool set names an MCP server that neither the deployment nor the tenant configures."""
INVALID_TOOL_SETTINGS = Reason.INVALID_TOOL_SETTINGS
"""A wait timeout or a round limit out of range."""
TOOL_RESULT_TOO_LARGE = Reason.TOOL_RESULT_TOO_LARGE
"""A submitted tool result (or error, or approval reason) is over its size limit."""
TOOL_WAIT_TIMEOUT = Reason.TOOL_WAIT_TIMEOUT
"""A turn's wait for a tool result or an approval passed its deadline (the turn's error reason)."""
TOOL_ROUNDS_EXHAUSTED = Reason.TOOL_ROUNDS_EXHAUSTED
"""The model still called tools after the turn's last allowed model round (the turn's error reason)."""
INVALID_CALL_ID = Reason.INVALID_CALL_ID
"""A submitted call id that cannot name a call (empty, too long, control characters)."""
EMPTY_TOOL_RESULT = Reason.EMPTY_TOOL_RESULT
"""SubmitToolResult with neither a result nor an error."""
INVALID_VERDICT = Reason.INVALID_VERDICT
"""DecideApproval with neither approve nor reject."""
INVALID_APPROVER = Reason.INVALID_APPROVER
"""An approver name over its limit or with control characters."""

MAX_TOOLS = 64
"""Tools one turn may offer, MCP servers' tools included (vendors accept more; prompts do not)."""
MAX_DESCRIPTION_BYTES = 4 * 1024
MAX_SCHEMA_BYTES = 16 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_ARGUMENTS_BYTES = 64 * 1024
"""A model's call whose arguments are larger goes back to it as an error."""
DEFAULT_MAX_RESULT_BYTES = 64 * 1024
"""A tool result (client or MCP) larger than this is refused (client) or replaced by an error (MCP)."""
MAX_REASON_BYTES = 4 * 1024
"""An approval decision's reason."""
MAX_APPROVER_CHARS = 128
MAX_CALL_ID_CHARS = 256
"""Call ids are the vendor's (``toolu_…``, ``call_…``); a submitted one longer than this names no call."""
PREVIEW_BYTES = 1024
"""The part of a result a ``tool_result`` event carries (``content_preview``)."""
DEFAULT_WAIT_TIMEOUT_S = 900.0
MAX_WAIT_TIMEOUT_S = 24 * 3600.0
DEFAULT_MAX_MODEL_ROUNDS = 8
MAX_MODEL_ROUNDS = 64

EMPTY_OBJECT_SCHEMA = '{"type": "object"}'
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MESSAGE_CHARS = 300
"""Length of one schema violation in the error a model sees (its own arguments may be quoted)."""
_KEYWORDS = frozenset(Draft202012Validator.VALIDATORS) | {"$ref", "$defs", "$schema", "$id"}


class InvalidTool(InvalidArgument):
    """A tool definition is refused: the message names the tool (or its position) and the problem, never the
    schema or description themselves."""

    reason = INVALID_TOOL


@dataclass(frozen=True, slots=True)
class ToolSelection:
    """The tools a session (or one turn) offers: its own definitions and whole MCP servers."""

    tools: tuple[ToolSpec, ...] = ()
    mcp_servers: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tools or self.mcp_servers)


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """How a turn uses tools: how long it waits for a result or an approval, how many model rounds it may make,
    how large a result may be."""

    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    max_model_rounds: int = DEFAULT_MAX_MODEL_ROUNDS
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES

    def overridden(self, *, wait_timeout_s: float | None = None, max_model_rounds: int | None = None) -> ToolPolicy:
        """This policy with the values given (a session's or a turn's settings; None: kept), within range."""
        policy = self
        if wait_timeout_s is not None:
            if not 0 < wait_timeout_s <= MAX_WAIT_TIMEOUT_S:
                raise InvalidArgument(
                    f"tool_settings.wait_timeout must be between 0 and {MAX_WAIT_TIMEOUT_S:g} s",
                    reason=INVALID_TOOL_SETTINGS,
                )
            policy = replace(policy, wait_timeout_s=wait_timeout_s)
        if max_model_rounds is not None:
            if not 0 < max_model_rounds <= MAX_MODEL_ROUNDS:
                raise InvalidArgument(
                    f"tool_settings.max_model_rounds must be at most {MAX_MODEL_ROUNDS}", reason=INVALID_TOOL_SETTINGS
                )
            policy = replace(policy, max_model_rounds=max_model_rounds)
        return policy


def is_tool_name(name: str) -> bool:
    """Whether ``name`` is 1 to 64 characters of [A-Za-z0-9_-] (what Anthropic and OpenAI both accept)."""
    return _NAME.fullmatch(name) is not None


def _label(spec: ToolSpec, index: int) -> str:
    # The position, never the name: a status message repeats nothing of the request (the caller knows which
    # tool its n-th one is).
    del spec
    return f"tool #{index + 1}"


def check_tool(spec: ToolSpec, index: int = 0) -> None:
    """One definition: its name, description and schema (an empty schema is allowed for an MCP tool: the
    server's listing supplies it). Raises :class:`InvalidTool`."""
    label = _label(spec, index)
    if not is_tool_name(spec.name):
        raise InvalidTool(f"{label} has an invalid name: use 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
    if len(spec.description.encode("utf-8", "surrogatepass")) > MAX_DESCRIPTION_BYTES:
        raise InvalidTool(f"{label}: the description is over {MAX_DESCRIPTION_BYTES} bytes")
    if spec.server and not is_tool_name(spec.server):
        raise InvalidTool(f"{label}: the MCP server name is invalid")
    if spec.input_schema_json or not spec.server:
        problem = schema_problem(spec.input_schema_json or EMPTY_OBJECT_SCHEMA)
        if problem:
            raise InvalidTool(f"{label}: {problem}")


def check_tools(specs: Sequence[ToolSpec], *, max_tools: int = MAX_TOOLS) -> None:
    """Definitions offered together: each valid, names unique, not too many."""
    if len(specs) > max_tools:
        raise InvalidArgument(f"at most {max_tools} tools may be offered; {len(specs)} were", reason=TOO_MANY_TOOLS)
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        check_tool(spec, index)
        if spec.name in seen:
            raise InvalidTool(f"{_label(spec, index)} is defined twice")
        seen.add(spec.name)


def schema_problem(schema_json: str) -> str:
    """What is wrong with an input schema (JSON text), in words that do not quote it; empty when it is a valid
    JSON Schema (draft 2020-12) of an object, within the size and depth limits, with local references only."""
    if len(schema_json.encode("utf-8", "surrogatepass")) > MAX_SCHEMA_BYTES:
        return f"the input schema is over {MAX_SCHEMA_BYTES} bytes"
    try:
        schema = json.loads(schema_json)
    except (ValueError, RecursionError):
        return "the input schema is not valid JSON"
    if not isinstance(schema, dict):
        return "the input schema must be a JSON object"
    if schema.get("type") != "object":
        return 'the input schema must describe an object ("type": "object")'
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return f"the input schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
    if _remote_reference(schema):
        return "the input schema refers to another document: only local references (#...) are allowed"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = next((str(part) for part in reversed(exc.absolute_path) if str(part) in _KEYWORDS), "")
        return "the input schema is not a valid JSON Schema (draft 2020-12)" + (
            f" at a {where!r} keyword" if where else ""
        )
    return ""


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _remote_reference(value: Any) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and isinstance(item, str) and not item.startswith("#"):
                return True
            if _remote_reference(item):
                return True
    elif isinstance(value, list):
        return any(_remote_reference(item) for item in value)
    return False


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    # Schemas are checked before they are offered; compiled once per distinct text (a host sees few).
    return Draft202012Validator(json.loads(schema_json))


def validate_call(call: ToolCall, spec: ToolSpec | None, offered: Iterable[str] = ()) -> ToolResult | None:
    """None when ``call`` may run; otherwise the error the model gets instead of running it: ``spec`` is None
    (no tool of that name is offered: ``offered`` lists those that are), the arguments are too large, not a
    JSON object, or do not match the tool's schema."""
    if spec is None:
        names = ", ".join(sorted(offered)) or "none"
        return _invalid(call, f"There is no tool named {call.name[:64]!r}. The tools you may call: {names}.")
    if len(call.arguments_json.encode("utf-8", "surrogatepass")) > MAX_ARGUMENTS_BYTES:
        return _invalid(call, f"The arguments are over {MAX_ARGUMENTS_BYTES} bytes; the call did not run.")
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except (ValueError, RecursionError) as exc:
        return _invalid(call, f"The arguments are not valid JSON ({str(exc)[:_MESSAGE_CHARS]}); the call did not run.")
    if not isinstance(arguments, dict):
        return _invalid(call, "The arguments must be a JSON object; the call did not run.")
    try:
        error = best_match(_validator(spec.input_schema_json or EMPTY_OBJECT_SCHEMA).iter_errors(arguments))
    except Unresolvable:
        return _invalid(call, "The tool's schema has a reference that does not resolve; the call did not run.")
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    message = error.message[:_MESSAGE_CHARS]
    return _invalid(
        call,
        f"The arguments do not match the tool's input schema{f' at {where!r}' if where else ''}: {message}. "
        "The call did not run; correct the arguments and call again.",
    )


def _invalid(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call_id=call.call_id, name=call.name, content=message, is_error=True)


def check_result_size(content: str, max_bytes: int = DEFAULT_MAX_RESULT_BYTES, field: str = "result") -> None:
    """A result (or error) a client submits: at most ``max_bytes`` of UTF-8, else ``TOOL_RESULT_TOO_LARGE``."""
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(f"{field} is {size} bytes; the limit is {max_bytes}", reason=TOOL_RESULT_TOO_LARGE)


def check_decision(reason: str, approver: str) -> None:
    """An approval decision's free text: bounded sizes (``TOOL_RESULT_TOO_LARGE`` for the reason, which the
    model sees like a result)."""
    check_result_size(reason, MAX_REASON_BYTES, "reason")
    if len(approver) > MAX_APPROVER_CHARS or not approver.isprintable():
        raise InvalidArgument(
            f"approver must be at most {MAX_APPROVER_CHARS} printable characters", reason=INVALID_APPROVER
        )


def check_call_id(call_id: str) -> None:
    """A submitted call id that could name a call; anything else is refused before any lookup."""
    if not call_id or len(call_id) > MAX_CALL_ID_CHARS or not call_id.isprintable():
        raise InvalidArgument(f"call_id must be 1 to {MAX_CALL_ID_CHARS} printable characters", reason=INVALID_CALL_ID)


def bounded_result(result: ToolResult, max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> ToolResult:
    """``result`` when it fits; otherwise an error result saying how large it was (for output the engine got
    from a server, which the model must not receive whole)."""
    size = len(result.content.encode("utf-8", "surrogatepass"))
    if size <= max_bytes:
        return result
    return ToolResult(
        call_id=result.call_id,
        name=result.name,
        content=f"The tool's output was {size} bytes, over the limit of {max_bytes}; it was discarded.",
        is_error=True,
    )


def preview(content: str, max_bytes: int = PREVIEW_BYTES) -> tuple[str, int]:
    """The start of ``content`` in at most ``max_bytes`` of UTF-8 (cut at a character boundary) and the size of
    the whole, for a ``tool_result`` event."""
    data = content.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return content, len(data)
    return data[:max_bytes].decode("utf-8", "ignore"), len(data)


def rejection(call: ToolCall, reason: str) -> ToolResult:
    """What the model sees for a call a person rejected."""
    why = f" The reason given: {reason}" if reason.strip() else ""
    return ToolResult(call.call_id, call.name, f"A person rejected this call; it did not run.{why}", is_error=True)


def timed_out(call: ToolCall) -> ToolResult:
    """What the record holds for a call nobody answered before the deadline."""
    return ToolResult(call.call_id, call.name, "Nobody answered this call before the deadline.", is_error=True)


def check_servers(selection: ToolSelection, configured: Collection[str]) -> None:
    """Every MCP server ``selection`` names is configured (for the deployment or the caller's tenant)."""
    named = [*selection.mcp_servers, *(spec.server for spec in selection.tools if spec.server)]
    for index, server in enumerate(named):
        if server not in configured:
            # By position among the servers named (mcp_servers, then the tools' servers), not by name.
            raise InvalidArgument(f"MCP server #{index + 1} is not configured", reason=UNKNOWN_MCP_SERVER)


def offered_tools(
    selection: ToolSelection, listed: Mapping[str, Sequence[ToolSpec]], *, max_tools: int = MAX_TOOLS
) -> tuple[tuple[ToolSpec, ...], tuple[str, ...]]:
    """The tools a turn offers the model, and the names left out.

    ``listed`` maps each MCP server that is up to the tools it lists (``ToolSpec.server`` set). The session's
    own definitions come first, in order; a definition naming an MCP server takes its description and schema
    from the listing when it left them empty (and is left out when the server does not list it, or is down);
    then every tool of the selection's whole servers that is not already offered. A server tool whose name
    collides with an offered one, or past ``max_tools``, is left out."""
    offered: dict[str, ToolSpec] = {}
    left_out: list[str] = []
    for spec in selection.tools:
        if not spec.server:
            offered[spec.name] = spec
            continue
        found = next((t for t in listed.get(spec.server, ()) if t.name == spec.name), None)
        if found is None:
            left_out.append(spec.name)
            continue
        offered[spec.name] = replace(
            spec,
            description=spec.description or found.description,
            input_schema_json=spec.input_schema_json or found.input_schema_json,
        )
    for server in selection.mcp_servers:
        for spec in listed.get(server, ()):
            if spec.name in offered or len(offered) >= max_tools:
                left_out.append(spec.name)
                continue
            offered[spec.name] = spec
    return tuple(offered.values()), tuple(left_out)
