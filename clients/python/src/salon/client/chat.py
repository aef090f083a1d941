"""``salon-chat``: talk to a Salon session from the terminal, with answers streamed as they arrive."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from salon.client.client import SalonClient, Session
from salon.client.errors import SalonError
from salon.client.events import Cancelled, Citations, Delta, Failed

HELP = """Commands:
  /new      start a new session
  /session  show the current session id
  /help     show this help
  /quit     leave (Ctrl-D works too)
Anything else is sent as a turn."""


def _dim(text: str, out: TextIO) -> str:
    return f"\033[2m{text}\033[0m" if out.isatty() else text


async def stream_turn(session: Session, text: str, out: TextIO = sys.stdout) -> None:
    """Send one turn and print its answer as it streams, then how long the first token took.

    A dropped stream is resumed by the client (see :class:`~salon.client.Turn`); the note says so."""
    start = time.perf_counter()
    turn = session.turn(text)
    try:
        async with turn:
            async for event in turn:
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
) -> int:
    """Run the interactive loop against the gateway at ``target`` (``credentials``: keyword arguments of
    :class:`SalonClient` such as ``api_key`` or ``root_certificates``)."""
    async with SalonClient(target, **dict(credentials or {})) as client:
        session = await _open_session(client, target, session_id, system_prompt)
        if session is None:
            return 2
        out.write(_dim(f"session {session.id} on {target}; /help for commands", out) + "\n")
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except (EOFError, KeyboardInterrupt):
                out.write("\n")
                return 0
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return 0
            if line == "/help":
                out.write(HELP + "\n")
            elif line == "/session":
                out.write(session.id + "\n")
            elif line == "/new":
                session = await client.create_session(system_prompt=system_prompt)
                out.write(_dim(f"new session {session.id}", out) + "\n")
            else:
                out.write("salon> ")
                await stream_turn(session, line, out)


async def _open_session(client: SalonClient, target: str, session_id: str, system_prompt: str) -> Session | None:
    """The session to chat in (``session_id``'s, or a new one); None, said on stderr, when there is none."""
    try:
        await client.wait_ready(10.0)
    except TimeoutError:
        print(f"cannot reach a Salon gateway at {target}", file=sys.stderr)
        return None
    try:
        if session_id:
            return await client.get_session(session_id)
        return await client.create_session(system_prompt=system_prompt)
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
        return asyncio.run(chat(args.target, args.session, args.system, credentials=credentials_from(args)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
