"""``salon-chat``: talk to a Salon session from the terminal, with answers streamed as they arrive.

Tool calls show as they happen, with their results. A call that waits for approval asks the person at the
terminal (``y`` approves; anything else rejects, with a reason the model sees); a call the client is meant
to run asks the person for its result, since the terminal is the only client there is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from salon.client.client import SalonClient, Session
from salon.client.errors import SalonError
from salon.client.events import (
    ApprovalDecided,
    ApprovalRequired,
    Cancelled,
    Citations,
    Delta,
    Failed,
    ToolCall,
    ToolResult,
)
from salon.client.turn import BaseTurn

Ask = Callable[[str], Awaitable[str | None]]
"""Reads one line from the person at the terminal after showing a prompt; ``None`` at end of input."""

PREVIEW_CHARS = 200

HELP = """Commands:
  /new      start a new session
  /session  show the current session id
  /help     show this help
  /quit     leave (Ctrl-D works too)
Anything else is sent as a turn; end a line with \\ to continue the message on the next. Tool calls
show as they happen; when one waits for approval you are asked (y approves, anything else rejects with a
reason the model sees), and a tool the client runs asks you for its result."""


def _dim(text: str, out: TextIO) -> str:
    return f"\033[2m{text}\033[0m" if out.isatty() else text


async def read_line(prompt: str) -> str | None:
    """``input(prompt)`` off the event loop (the turn's stream goes on meanwhile); ``None`` at end of input."""
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


async def read_message(ask: Ask) -> str | None:
    """One message: a line, or several when each but the last ends with a backslash (``None`` at the end of
    input)."""
    line = await ask("you> ")
    parts: list[str] = []
    while line is not None and line.endswith("\\"):
        parts.append(line[:-1])
        line = await ask("...  ")
    if line is None:
        return "\n".join(parts) if parts else None
    return "\n".join([*parts, line])


def _approver() -> str:
    return f"{os.environ.get('USER') or 'someone'} at salon-chat"


def _short(text: str, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def _decide(turn: BaseTurn, event: ApprovalRequired, ask: Ask, out: TextIO) -> None:
    where = f" on {event.mcp_server}" if event.mcp_server else ""
    out.write(f"\n[approval needed: {event.tool}{where} {_short(event.arguments_json)}]\n")
    out.flush()
    answer = await ask("approve? [y/N] ")
    if answer is not None and answer.strip().lower() in ("y", "yes"):
        await turn.approve(event.call_id, approver=_approver())
        return
    reason = await ask("reason (the model sees it)> ") if answer is not None else None
    reason = (reason or "").strip() or "rejected by the person at the terminal"
    await turn.reject(event.call_id, reason, approver=_approver())


async def _answer(turn: BaseTurn, event: ToolCall, ask: Ask, out: TextIO) -> None:
    out.write(f"\n[the client runs {event.tool}: type its result, or leave it empty to refuse]\n")
    out.flush()
    result = await ask(f"result of {event.tool}> ")
    if result is None or not result.strip():
        await turn.submit_tool_error(event.call_id, "nobody at the terminal could run this tool")
    else:
        await turn.submit_tool_result(event.call_id, result.strip())


class _ToolDesk:
    """The tool side of one turn at the terminal: shows calls, decisions and results, and puts approvals and
    client calls to the person."""

    def __init__(self, turn: BaseTurn, ask: Ask, out: TextIO) -> None:
        self._turn = turn
        self._ask = ask
        self._out = out
        self._calls: dict[str, ToolCall] = {}

    async def handle(self, event: object) -> bool:
        """Deal with ``event`` if it is about tools; whether it was."""
        out = self._out
        if isinstance(event, ToolCall):
            self._calls[event.call_id] = event
            where = f" on {event.mcp_server}" if event.mcp_server else ""
            out.write("\n" + _dim(f"[tool call {event.tool}{where} {_short(event.arguments_json)}]", out) + "\n")
            if event.runs_on_client and not event.requires_approval:
                await _answer(self._turn, event, self._ask, out)
        elif isinstance(event, ApprovalRequired):
            await _decide(self._turn, event, self._ask, out)
        elif isinstance(event, ApprovalDecided):
            verdict = "approved" if event.approved else "rejected"
            by = f" by {event.approver}" if event.approver else ""
            why = f": {event.reason}" if event.reason else ""
            out.write(_dim(f"[{verdict}{by}{why}]", out) + "\n")
            call = self._calls.get(event.call_id)
            if event.approved and call is not None and call.runs_on_client:
                await _answer(self._turn, call, self._ask, out)
        elif isinstance(event, ToolResult):
            label = "error" if event.is_error else "result"
            line = f"[{label} of {event.tool or 'tool'} ({event.source}): {_short(event.content_preview)}]"
            out.write(_dim(line, out) + "\n")
        else:
            return False
        return True


def _show(event: object, out: TextIO) -> None:
    """Print the answer's part of a turn: sources, text, how it ended."""
    if isinstance(event, Citations) and event.citations:
        # Before the first token: the passages the answer may cite as [1], [2] …
        names = [
            f"[{n}] {'earlier in this chat' if c.source == 'memory' else c.title or c.document_id}"
            for n, c in enumerate(event.citations, start=1)
        ]
        out.write(_dim("sources: " + "; ".join(names), out) + "\n")
    elif isinstance(event, Delta):
        out.write(event.text)
        out.flush()
    elif isinstance(event, Failed):
        out.write(f"\n[turn failed: {event.message} ({event.reason})]")
    elif isinstance(event, Cancelled):
        out.write(f"\n[turn cancelled: {event.reason}]")


async def stream_turn(session: Session, text: str, out: TextIO = sys.stdout, ask: Ask = read_line) -> None:
    """Send one turn and print its answer as it streams, with its tool calls, then how long the first token
    took. Approvals and client tool calls are put to the person through ``ask``.

    A dropped stream is resumed by the client (see :class:`~salon.client.Turn`); the note says so."""
    start = time.perf_counter()
    turn = session.turn(text)
    desk = _ToolDesk(turn, ask, out)
    try:
        async with turn:
            async for event in turn:
                if not await desk.handle(event):
                    _show(event, out)
    except SalonError as exc:
        out.write(f"[error: {exc.message} ({exc.code.name}{', ' + exc.reason if exc.reason else ''})]")
    total = time.perf_counter() - start
    first = turn.time_to_first_token_s
    ttft = f"first token {first * 1000:.0f} ms, " if first is not None else ""
    resumed = f", resumed {turn.resumes}x" if turn.resumes else ""
    out.write("\n" + _dim(f"({ttft}turn {total * 1000:.0f} ms{resumed})", out) + "\n")
    out.flush()


async def chat(
    target: str,
    session_id: str = "",
    system_prompt: str = "",
    out: TextIO = sys.stdout,
    *,
    credentials: Mapping[str, Any] | None = None,
    mcp_servers: Sequence[str] = (),
    ask: Ask = read_line,
) -> int:
    """Run the interactive loop against the gateway at ``target`` (``credentials``: keyword arguments of
    :class:`SalonClient` such as ``api_key`` or ``root_certificates``; ``mcp_servers``: configured MCP servers
    whose tools new sessions offer)."""
    servers = list(mcp_servers) or None
    async with SalonClient(target, **dict(credentials or {})) as client:
        session = await _open_session(client, target, session_id, system_prompt, servers)
        if session is None:
            return 2
        out.write(_dim(f"session {session.id} on {target}; /help for commands", out) + "\n")
        while True:
            try:
                line = await read_message(ask)
            except KeyboardInterrupt:
                line = None
            if line is None:
                out.write("\n")
                return 0
            line = line.strip()
            if line in ("/quit", "/exit"):
                return 0
            if line == "/new":
                session = await client.create_session(system_prompt=system_prompt, mcp_servers=servers)
                out.write(_dim(f"new session {session.id}", out) + "\n")
            elif line:
                await _command_or_turn(session, line, out, ask)


async def _command_or_turn(session: Session, line: str, out: TextIO, ask: Ask) -> None:
    if line == "/help":
        out.write(HELP + "\n")
    elif line == "/session":
        out.write(session.id + "\n")
    else:
        out.write("salon> ")
        await stream_turn(session, line, out, ask)


async def _open_session(
    client: SalonClient, target: str, session_id: str, system_prompt: str, mcp_servers: list[str] | None
) -> Session | None:
    """The session to chat in (``session_id``'s, or a new one); None, said on stderr, when there is none."""
    try:
        await client.wait_ready(10.0)
    except TimeoutError:
        print(f"cannot reach a Salon gateway at {target}", file=sys.stderr)
        return None
    try:
        if session_id:
            return await client.get_session(session_id)
        return await client.create_session(system_prompt=system_prompt, mcp_servers=mcp_servers)
    except SalonError as exc:
        print(f"cannot open the session: {exc.message} ({exc.code.name})", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``salon-chat``."""
    parser = argparse.ArgumentParser(
        prog="salon-chat",
        description="Chat with a Salon session in the terminal; answers stream in as they are generated.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", default="127.0.0.1:50051", help="gateway address, host:port (default %(default)s)")
    parser.add_argument("--session", default="", help="continue this session instead of opening a new one")
    parser.add_argument("--system", default="", help="system prompt of a new session")
    parser.add_argument(
        "--mcp-server",
        action="append",
        default=[],
        metavar="NAME",
        help="offer the tools of this configured MCP server to new sessions (repeatable)",
    )
    add_credential_arguments(parser)
    return parser


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """``--api-key``, ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` (the key also from ``$SALON_API_KEY``)."""
    parser.add_argument(
        "--api-key", default=None, help="API key sent as 'authorization: Bearer' (default: $SALON_API_KEY)"
    )
    parser.add_argument("--tls-ca", default=None, help="PEM CA file verifying the server: turns TLS on")
    parser.add_argument("--tls-cert", default=None, help="PEM client certificate for mutual TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")


def credentials_from(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`SalonClient` from the credential options (files read here)."""
    found: dict[str, Any] = {}
    api_key = args.api_key or os.environ.get("SALON_API_KEY")
    if api_key:
        found["api_key"] = api_key
    for option, name in (
        ("tls_ca", "root_certificates"),
        ("tls_cert", "client_certificate"),
        ("tls_key", "client_key"),
    ):
        path = getattr(args, option)
        if path:
            found[name] = Path(path).read_bytes()
    if ("client_certificate" in found or "client_key" in found) and "root_certificates" not in found:
        raise SystemExit("--tls-cert and --tls-key need --tls-ca")
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``salon-chat``."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(
            chat(
                args.target, args.session, args.system, credentials=credentials_from(args), mcp_servers=args.mcp_server
            )
        )
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
