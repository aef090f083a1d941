"""Tools: what the model may call, and the functions of the application that answer the calls.

A :class:`Tool` is a name, a description and a JSON Schema of its arguments, plus either a function the
client runs (a *client tool*) or the name of an MCP server the engine calls (an *MCP tool*). :func:`tool`
makes one from a plain function (sync or async): name, description and schema come from the function's
name, docstring and type hints unless given. :class:`Toolbox` holds the tools offered to a session or a
turn and runs a call of one of them: the function's return value becomes the result (text as is, anything
else as JSON), an exception becomes an error result carrying its message only (never a traceback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar, overload

from salon.client.events import ToolCall
from salon.client.schema import convert_arguments, describe_function
from salon.v1 import session_pb2

__all__ = ["Tool", "ToolError", "ToolLike", "ToolOutcome", "Toolbox", "Tools", "mcp_tool", "tool", "tool_settings"]

F = TypeVar("F", bound=Callable[..., Any])


class ToolError(Exception):
    """Raise it from a tool function to tell the model what went wrong in your own words: its message is the
    error result as is. Any other exception becomes ``"<ExceptionType>: <message>"``."""


@dataclasses.dataclass(frozen=True)
class Tool:
    """A tool the model may call.

    ``function`` runs on the client when the model calls the tool (sync functions in a worker thread, async
    ones on the event loop); with ``mcp_server`` set, that configured MCP server runs it instead. A tool with
    neither is offered to the model, and its calls are left to the application (answer them with
    ``turn.submit_tool_result``). With ``requires_approval`` every call waits for a person's decision first.
    """

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] | None = None
    """JSON Schema of the arguments (an object); ``None``: no arguments for a client tool, the server's
    listed schema for an MCP tool."""
    requires_approval: bool = False
    mcp_server: str = ""
    function: Callable[..., Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    _hints: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _injected: Mapping[str, type] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_proto(self) -> session_pb2.Tool:
        """The ``salon.v1.Tool`` sent to the engine."""
        schema = "" if self.input_schema is None else json.dumps(self.input_schema, separators=(",", ":"))
        return session_pb2.Tool(
            name=self.name,
            description=self.description,
            input_schema_json=schema,
            requires_approval=self.requires_approval,
            mcp_server=self.mcp_server,
        )

    @property
    def runs_on_client(self) -> bool:
        """Whether the client runs this tool's calls (it has a function and no MCP server)."""
        return self.function is not None and not self.mcp_server

    async def run(self, call: ToolCall) -> ToolOutcome:
        """Run the function on ``call``'s arguments; never raises (except when cancelled)."""
        if self.function is None:
            return ToolOutcome(error=f"the tool {self.name!r} has no function on this client")
        try:
            arguments = dict(convert_arguments(call.arguments, self._hints))
            arguments.update({name: call for name in self._injected})
            result = await _invoke(self.function, arguments)
            return ToolOutcome(result=encode_result(result))
        except asyncio.CancelledError:
            raise
        except ToolError as exc:
            return ToolOutcome(error=str(exc) or type(exc).__name__)
        except Exception as exc:
            return ToolOutcome(error=describe_exception(exc))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (a decorated function stays usable as itself)."""
        if self.function is None:
            raise TypeError(f"the tool {self.name!r} has no function")
        return self.function(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class ToolOutcome:
    """What a call of a client tool produced: a result or an error (exactly one is not ``None``)."""

    result: str | None = None
    error: str | None = None


def describe_exception(exc: BaseException) -> str:
    """What the model is told about an exception: its type and message, never a traceback."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def encode_result(value: Any) -> str:
    """A function's return value as the text the model sees: a string as is, ``None`` as an empty result,
    bytes as UTF-8, anything else as JSON (dataclasses as objects; values JSON cannot hold as their ``str``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, default=_json_fallback, ensure_ascii=False)


def _json_fallback(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


async def _invoke(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    if is_async_callable(function):
        return await function(**arguments)
    # A plain function may block (I/O, a slow library): a worker thread keeps the event loop, and with it every
    # other turn's stream, running meanwhile.
    result = await asyncio.to_thread(functools.partial(function, **arguments))
    if inspect.isawaitable(result):
        return await result
    return result


def is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` returns a coroutine (async functions, partials of them, objects with an
    async ``__call__``)."""
    target: Any = function
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)


@overload
def tool(
    function: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    requires_approval: bool = False,
) -> Tool: ...


@overload
def tool(
    function: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a client tool of a plain function (sync or async): ``@tool``, ``@tool(requires_approval=True)`` or
    ``tool(fn, name=...)``.

    The name defaults to the function's name, the description to its docstring (the text before ``Args:`` and
    the like), the schema to one built from its parameters' type hints, defaults and docstring descriptions
    (see :mod:`salon.client.schema`). The model's arguments are passed as keywords, converted to enums,
    dataclasses, tuples and sets where the hints say so. A parameter annotated with
    :class:`~salon.client.ToolCall` receives the call itself (its ``call_id``, ``turn_id`` …) and is not
    offered to the model.
    """

    def make(fn: Callable[..., Any]) -> Tool:
        if isinstance(fn, Tool):
            raise TypeError("already a Tool")
        described = describe_function(fn, inject=(ToolCall,), schema=schema is None)
        return Tool(
            name=name or str(getattr(fn, "__name__", "")),
            description=described.description if description is None else description,
            input_schema=described.schema if schema is None else schema,
            requires_approval=requires_approval,
            function=fn,
            _hints=described.hints,
            _injected=described.injected,
        )

    return make if function is None else make(function)


def mcp_tool(
    name: str,
    server: str,
    *,
    requires_approval: bool = False,
    description: str = "",
    schema: Mapping[str, Any] | None = None,
) -> Tool:
    """A tool that the configured MCP server ``server`` runs (it must list a tool called ``name``). Its
    description and schema default to what the server lists; ``requires_approval`` makes each call wait for a
    person. (To offer every tool of a server, pass its name in ``mcp_servers=`` instead.)"""
    return Tool(
        name=name, description=description, input_schema=schema, requires_approval=requires_approval, mcp_server=server
    )


ToolLike = Tool | Callable[..., Any]
"""A :class:`Tool`, or a plain function made into one with :func:`tool`'s defaults."""


class Toolbox:
    """The tools offered to a session or a turn, by name, and the MCP servers whose every tool is offered."""

    def __init__(self, tools: Iterable[ToolLike] = (), mcp_servers: Sequence[str] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            made = item if isinstance(item, Tool) else tool(item)
            if made.name in self._tools:
                raise ValueError(f"two tools are named {made.name!r}")
            self._tools[made.name] = made
        self.mcp_servers: tuple[str, ...] = tuple(mcp_servers)

    @classmethod
    def of(cls, tools: Iterable[ToolLike] | Toolbox | None, mcp_servers: Sequence[str] | None = None) -> Toolbox | None:
        """A toolbox of ``tools`` and ``mcp_servers``; ``None`` when neither is given (nothing to send)."""
        if isinstance(tools, Toolbox):
            return tools if mcp_servers is None else cls(tools.tools, mcp_servers)
        if tools is None and mcp_servers is None:
            return None
        return cls(tools or (), mcp_servers or ())

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The tools, in the order given."""
        return tuple(self._tools.values())

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if offered here."""
        return self._tools.get(name)

    def runner_for(self, call: ToolCall) -> Tool | None:
        """The tool whose function answers ``call``: offered here, run by the client, and not an MCP call."""
        found = self._tools.get(call.tool)
        return found if found is not None and found.runs_on_client and call.runs_on_client else None

    def to_proto(self) -> session_pb2.ToolSet:
        """The ``salon.v1.ToolSet`` sent to the engine."""
        return session_pb2.ToolSet(tools=[t.to_proto() for t in self._tools.values()], mcp_servers=self.mcp_servers)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __repr__(self) -> str:
        servers = f", mcp_servers={list(self.mcp_servers)}" if self.mcp_servers else ""
        return f"Toolbox({list(self._tools)}{servers})"


def tool_settings(
    wait_timeout_s: float | None = None, max_model_rounds: int | None = None
) -> session_pb2.ToolSettings | None:
    """The ``salon.v1.ToolSettings`` of these values; ``None`` when neither is given (the defaults hold)."""
    if wait_timeout_s is None and max_model_rounds is None:
        return None
    settings = session_pb2.ToolSettings(max_model_rounds=max_model_rounds or 0)
    if wait_timeout_s is not None:
        if wait_timeout_s <= 0:
            raise ValueError("wait_timeout_s must be positive")
        settings.wait_timeout.FromTimedelta(timedelta(seconds=wait_timeout_s))
    return settings


Tools = Iterable[ToolLike] | Toolbox
"""Tools given to a session or a turn: :class:`Tool` objects and plain functions (made into tools with
:func:`tool`'s defaults), or a :class:`Toolbox`."""
