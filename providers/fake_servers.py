"""Local model servers for tests and benchmarks: the real SDK and HTTP code, no internet.

:class:`FakeAnthropicServer` speaks the Messages API's streaming protocol (``message_start``,
``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``, ``ping``, ``error``) and
:class:`FakeOpenAIServer` the chat completions stream, both over real HTTP/1.1 (chunked, keep-alive) on
127.0.0.1 and a port the OS picks. Each request takes the next scripted :class:`Reply` (or the default reply):
an HTTP error with headers, a stream that ends normally, or one that errors, drops, stalls or waits for the
test after ``k`` tokens. Every request is recorded (body, headers, whether the client hung up early).

Tools: a reply's ``tool_calls`` (:class:`ToolUse`) are streamed after its text as each vendor streams them —
Anthropic ``tool_use`` blocks whose input arrives in ``input_json_delta`` pieces and ``stop_reason: tool_use``;
OpenAI ``delta.tool_calls`` with the id and name first and the arguments in fragments, ``finish_reason:
tool_calls`` — the arguments split across several deltas. :meth:`FakeModelServer.tool_results` and
:meth:`FakeModelServer.tool_names` read what a recorded request sent back and offered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

_EMPTY_TEXT = {"type": "text", "text": ""}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


@dataclass(frozen=True)
class ToolUse:
    """A tool call in a scripted reply."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """The arguments; text is sent as it is (to script invalid JSON)."""
    call_id: str = ""
    """Default: ``toolu_<n>`` (Anthropic) or ``call_<n>`` (OpenAI), numbered across the server's replies."""

    def arguments_json(self) -> str:
        """The arguments as the JSON text the model streams."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(dict(self.arguments))


@dataclass(frozen=True)
class ToolResultSent:
    """A tool result found in a recorded request."""

    call_id: str
    content: str
    is_error: bool = False


def _pieces(text: str, count: int) -> list[str]:
    """``text`` split into ``count`` pieces or fewer (none empty, unless the text is)."""
    if not text:
        return [""]
    size = -(-len(text) // max(count, 1))
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one request."""

    tokens: Sequence[str] = ("Hello", " world")
    status: int = 200
    """Anything but 200 answers with an error body of type ``error_type`` and ``headers``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    error_type: str = "overloaded_error"
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 10
    output_tokens: int | None = None
    """Reported output tokens; default: the number of tokens."""
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str = ""
    """Model named in the answer; default: the requested one."""
    error_after: int | None = None
    """Send an in-stream error event (``error_type``) after this many tokens."""
    drop_after: int | None = None
    """Cut the connection after this many tokens, mid-body."""
    stall_after: int | None = None
    """Send nothing more after this many tokens, until the client hangs up."""
    gate_after: int | None = None
    """After this many tokens, wait for :meth:`FakeModelServer.release` before going on."""
    token_delay_s: float = 0.0
    ping_every: int = 0
    """A ``ping`` event after every this many tokens (Anthropic only)."""
    tool_calls: Sequence[ToolUse] = ()
    """Tool calls streamed after the tokens; the stop reason is then ``tool_use`` unless another is scripted."""
    argument_pieces: int = 3
    """How many deltas carry each call's arguments."""
    same_index: bool = False
    """OpenAI: number every call 0, telling them apart by id only (as Ollama does)."""

    @classmethod
    def calls(cls, *calls: ToolUse, text: Sequence[str] = (), **more: Any) -> Reply:
        """A reply that calls tools (after ``text``, if any)."""
        return cls(tokens=text, tool_calls=calls, **more)

    @classmethod
    def error(cls, status: int, error_type: str = "api_error", *, retry_after: str | None = None) -> Reply:
        """An HTTP error answer (``retry_after`` becomes the ``retry-after`` header)."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(status=status, error_type=error_type, headers=headers)


def echo_reply(tokens: int = 8) -> Callable[[dict[str, Any]], Reply]:
    """A default reply: the words of the last user message, cycled to ``tokens`` tokens."""

    def reply(body: dict[str, Any]) -> Reply:
        text = ""
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user":
                content = message.get("content")
                text = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
                break
        words = text.split() or ["…"]
        return Reply(tokens=[f"{w} " for w in itertools.islice(itertools.cycle(words), tokens)])

    return reply


@dataclass
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client hung up before the answer ended."""
    finished: bool = False
    """The whole answer was sent."""
    tokens_sent: int = 0
    """Text tokens written to the client (what a vendor bills, even when the client hung up after them)."""


class _Token(bytes):
    """A stream step that carries one text token (counted as it is written)."""


class _Action:
    def __init__(self, kind: str, value: float = 0.0) -> None:
        self.kind, self.value = kind, value


Step = bytes | _Action


class FakeModelServer:
    """The HTTP side, shared by both protocols. Lifecycle: :meth:`start`, :meth:`close` (idempotent)."""

    path = "/"

    def __init__(self, default: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.default = default or echo_reply()
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self._gate = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._call_numbers = itertools.count(1)
        self.url = ""

    def call_id(self, use: ToolUse, prefix: str) -> str:
        """The id a scripted call is sent with."""
        return use.call_id or f"{prefix}{next(self._call_numbers)}"

    def tool_results(self, body: dict[str, Any]) -> list[ToolResultSent]:
        """The tool results a request sent back, in order."""
        raise NotImplementedError

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        """The names of the tools a request offered."""
        raise NotImplementedError

    def push(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order (then the default reply). A gated reply among them
        closes the gate again: a :meth:`release` before this push was for earlier replies (a server shared by
        several tests would otherwise hold nothing once one test had released)."""
        if any(r.gate_after is not None for r in replies):
            self._gate.clear()
        self.script.extend(replies)

    def release(self) -> None:
        """Let answers waiting at their ``gate_after`` go on."""
        self._gate.set()

    async def start(self) -> str:
        """Listen on 127.0.0.1 and a free port; returns the base URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self._gate.set()
        if self._server is not None:
            self._server.close()
        # Aborting the sockets ends every handler through its own error path (cancelling a handler task makes
        # asyncio's stream protocol log the CancelledError).
        for writer in self._connections.values():
            writer.transport.abort()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def steps(self, reply: Reply, body: dict[str, Any]) -> list[Step]:
        """The stream of ``reply`` in this server's protocol."""
        raise NotImplementedError

    def error_body(self, reply: Reply) -> dict[str, Any]:
        """The JSON body of an HTTP error answer."""
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                recorded = Recorded(path=path, headers=headers, body=body)
                self.requests.append(recorded)
                reply = self.script.popleft() if self.script else self.default(body)
                if not await self._respond(path, reply, recorded, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _respond(
        self, path: str, reply: Reply, recorded: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send the answer; False when the connection is finished."""
        if path.split("?", maxsplit=1)[0] != self.path:
            reply = Reply(status=404, error_type="not_found_error")
        if reply.status != 200:
            payload = json.dumps(self.error_body(reply)).encode()
            head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}"]
            head += ["content-type: application/json", f"content-length: {len(payload)}"]
            head += [f"{k}: {v}" for k, v in reply.headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            recorded.finished = True
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        # The client sends nothing while it reads an answer: a read that ends means it hung up.
        gone = asyncio.ensure_future(reader.read(1))
        gone.add_done_callback(lambda read: None if read.cancelled() else recorded.disconnected.set())
        try:
            for step in self.steps(reply, recorded.body):
                if gone.done():
                    return False
                if isinstance(step, bytes):
                    writer.write(b"%x\r\n%s\r\n" % (len(step), step))
                    await writer.drain()
                    recorded.tokens_sent += isinstance(step, _Token)
                elif step.kind == "sleep":
                    await asyncio.sleep(step.value)
                elif step.kind == "gate":
                    await asyncio.wait([gone, asyncio.ensure_future(self._gate.wait())], return_when="FIRST_COMPLETED")
                elif step.kind == "stall":
                    await asyncio.wait([gone])
                    return False
                elif step.kind == "drop":
                    return False  # the caller closes the socket in the middle of the chunked body
            writer.write(b"0\r\n\r\n")
            recorded.finished = True
            # Cancelled before the loop runs again, so the read cannot take a byte of the next request.
            gone.cancel()
            await writer.drain()
            return True
        finally:
            gone.cancel()
            # Its end awaited: a reader still waiting would make the next request's read fail.
            await asyncio.gather(gone, return_exceptions=True)


def _sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def _interrupted(reply: Reply, index: int, error_step: Callable[[], bytes]) -> list[Step] | None:
    """The steps that end a stream after ``index`` tokens, if the reply says so (else None)."""
    if reply.error_after == index:
        return [error_step()]
    if reply.drop_after == index:
        return [_Action("drop")]
    if reply.stall_after == index:
        return [_Action("stall")]
    return None


def _between(reply: Reply, index: int) -> list[Step]:
    steps: list[Step] = []
    if reply.gate_after == index:
        steps.append(_Action("gate"))
    if reply.token_delay_s and index:
        steps.append(_Action("sleep", reply.token_delay_s))
    return steps


class FakeAnthropicServer(FakeModelServer):
    """Speaks ``POST /v1/messages`` with ``stream: true``, as the Anthropic API does."""

    path = "/v1/messages"

    def error_body(self, reply: Reply) -> dict[str, Any]:
        """Anthropic's error body."""
        return {"type": "error", "error": {"type": reply.error_type, "message": f"scripted {reply.error_type}"}}

    def tool_results(self, body: dict[str, Any]) -> list[ToolResultSent]:
        """The ``tool_result`` blocks of the request's messages."""
        found = []
        for message in body.get("messages") or ():
            content = message.get("content")
            for block in content if isinstance(content, list) else ():
                if block.get("type") == "tool_result":
                    text = block.get("content", "")
                    if isinstance(text, list):
                        text = "".join(part.get("text", "") for part in text)
                    found.append(ToolResultSent(block["tool_use_id"], text, bool(block.get("is_error", False))))
        return found

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        """The request's ``tools``."""
        return [tool["name"] for tool in body.get("tools") or ()]

    def steps(self, reply: Reply, body: dict[str, Any]) -> list[Step]:
        """message_start, a text block of the reply's tokens, a tool_use block per call, message_delta,
        message_stop."""
        model = reply.model or str(body.get("model", ""))
        usage = {
            "input_tokens": reply.input_tokens,
            "output_tokens": 1,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        }
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        steps: list[Step] = [_sse("message_start", {"type": "message_start", "message": message})]
        text, interrupted = self._text_block(reply)
        steps += text
        if interrupted:
            return steps
        first = 1 if text else 0
        for offset, use in enumerate(reply.tool_calls):
            steps += self._tool_block(use, first + offset, reply.argument_pieces)
        output = len(reply.tokens) if reply.output_tokens is None else reply.output_tokens
        stop = "tool_use" if reply.tool_calls and reply.stop_reason == "end_turn" else reply.stop_reason
        steps += [
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": reply.stop_sequence},
                    "usage": {"output_tokens": output + len(reply.tool_calls)},
                },
            ),
            _sse("message_stop", {"type": "message_stop"}),
        ]
        return steps

    def _text_block(self, reply: Reply) -> tuple[list[Step], bool]:
        """The text block (none when the reply only calls tools), or the steps up to its interruption (then
        True)."""
        if not reply.tokens and reply.tool_calls:
            return [], False

        def error() -> bytes:
            return _sse("error", self.error_body(reply))

        start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        steps: list[Step] = [_sse("content_block_start", start)]
        for index, token in enumerate(reply.tokens):
            if (end := _interrupted(reply, index, error)) is not None:
                return steps + end, True
            steps += _between(reply, index)
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}
            steps.append(_Token(_sse("content_block_delta", delta)))
            if reply.ping_every and (index + 1) % reply.ping_every == 0:
                steps.append(_sse("ping", {"type": "ping"}))
        if (end := _interrupted(reply, len(reply.tokens), error)) is not None:
            return steps + end, True
        steps += _between(reply, len(reply.tokens))
        return [*steps, _sse("content_block_stop", {"type": "content_block_stop", "index": 0})], False

    def _tool_block(self, use: ToolUse, index: int, pieces: int) -> list[Step]:
        block = {"type": "tool_use", "id": self.call_id(use, "toolu_"), "name": use.name, "input": {}}
        steps: list[Step] = [
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        ]
        # The API opens the input with an empty piece, then streams the JSON text.
        for piece in ["", *_pieces(use.arguments_json(), pieces)]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            steps.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        steps.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        return steps


class FakeOpenAIServer(FakeModelServer):
    """Speaks ``POST /v1/chat/completions`` with ``stream: true``, as vLLM, Ollama and llama.cpp do."""

    path = "/v1/chat/completions"

    def error_body(self, reply: Reply) -> dict[str, Any]:
        """OpenAI's error body."""
        return {"error": {"message": f"scripted {reply.error_type}", "type": reply.error_type, "code": reply.status}}

    def tool_results(self, body: dict[str, Any]) -> list[ToolResultSent]:
        """The request's ``tool`` messages (an error is the content starting with ``Error:``, as the API has no
        flag for it)."""
        return [
            ToolResultSent(m["tool_call_id"], m.get("content") or "", str(m.get("content") or "").startswith("Error:"))
            for m in body.get("messages") or ()
            if m.get("role") == "tool"
        ]

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        """The request's ``tools`` (functions)."""
        return [tool["function"]["name"] for tool in body.get("tools") or ()]

    def steps(self, reply: Reply, body: dict[str, Any]) -> list[Step]:
        """A role chunk, one chunk per token, the tool call chunks, a finish chunk, a usage chunk, ``[DONE]``."""
        model = reply.model or str(body.get("model", ""))

        def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
            return _sse(None, {**data, "choices": choices, **more})

        def error() -> bytes:
            return _sse(None, {"error": {"message": "scripted", "type": reply.error_type, "code": 500}})

        # The role chunk's content is null when the answer is only tool calls, as OpenAI sends it.
        opening = {"role": "assistant", "content": "" if reply.tokens or not reply.tool_calls else None}
        steps: list[Step] = [chunk([{"index": 0, "delta": opening, "finish_reason": None}])]
        for index, token in enumerate(reply.tokens):
            if (end := _interrupted(reply, index, error)) is not None:
                return steps + end
            steps += _between(reply, index)
            steps.append(_Token(chunk([{"index": 0, "delta": {"content": token}, "finish_reason": None}])))
        if (end := _interrupted(reply, len(reply.tokens), error)) is not None:
            return steps + end
        steps += _between(reply, len(reply.tokens))
        for number, use in enumerate(reply.tool_calls):
            for piece in self._tool_pieces(use, 0 if reply.same_index else number, reply.argument_pieces):
                steps.append(chunk([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]))
        finish = {"max_tokens": "length", "refusal": "content_filter"}.get(reply.stop_reason, "stop")
        if reply.tool_calls and reply.stop_reason in ("end_turn", "tool_use"):
            finish = "tool_calls"
        last: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish}
        if reply.stop_sequence:
            last["stop_reason"] = reply.stop_sequence  # as vLLM reports the stop string that matched
        output = len(reply.tokens) if reply.output_tokens is None else reply.output_tokens
        usage = {
            "prompt_tokens": reply.input_tokens + reply.cache_read_input_tokens,
            "completion_tokens": output + len(reply.tool_calls),
            "prompt_tokens_details": {"cached_tokens": reply.cache_read_input_tokens},
        }
        steps += [chunk([last]), chunk([], usage=usage), _sse(None, "[DONE]")]
        return steps

    def _tool_pieces(self, use: ToolUse, index: int, pieces: int) -> list[dict[str, Any]]:
        """The id, type and name with empty arguments first, then the arguments in fragments."""
        opening = {"index": index, "id": self.call_id(use, "call_"), "type": "function"}
        deltas: list[dict[str, Any]] = [{**opening, "function": {"name": use.name, "arguments": ""}}]
        deltas += [{"index": index, "function": {"arguments": p}} for p in _pieces(use.arguments_json(), pieces)]
        return deltas
