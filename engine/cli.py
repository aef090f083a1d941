"""The ``salon`` command: run the engine, watch a demo, chat, inspect configuration.

Importing this module loads nothing beyond the standard library: ``salon --help`` answers at once, and each
command imports what it needs (the engine, gRPC, Ray, NATS, LanceDB) when it runs. The command line itself
is :mod:`salon.engine.cli_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salon.engine.cli_parser import build_parser

if TYPE_CHECKING:
    from rich.console import Console

    from salon.engine.config import Config
    from salon.engine.ray_start import RayStart

__all__ = ["build_parser", "main"]

log = logging.getLogger("salon")


def _config(args: argparse.Namespace, **overrides: object) -> Config:
    from salon.engine.config import Config

    config = Config.load(args.config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**changes) if changes else config


def _setup_logging(config: Config) -> None:
    from salon import otel

    otel.setup_logging(config.log_level, config.log_format, process="gateway")


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


class Announcer:
    """What ``salon serve`` tells its operator: styled lines on a terminal, or log records (one JSON object per
    line, like every other line) when the logs are JSON."""

    def __init__(self, config: Config) -> None:
        self._json = config.log_format == "json"
        self._console = None if self._json else _console(stderr=True)
        if self._json:
            # Shown whatever SALON_LOG_LEVEL says, as on a terminal: an operator needs the address.
            log.setLevel(logging.INFO)

    def say(self, markup: str, plain: str, *, warning: bool = False, wrap: bool = True) -> None:
        """Print ``markup`` (rich markup) on a terminal, or log ``plain``; ``wrap`` False keeps a long line (a
        link) whole, for copying."""
        if self._console is not None:
            self._console.print(markup, soft_wrap=not wrap)
        else:
            log.log(logging.WARNING if warning else logging.INFO, "%s", plain)


def _begin_ray(config: Config) -> RayStart | None:
    """Ray's start, begun before the engine's imports (it mostly waits for its own processes meanwhile); None for
    a gateway alone."""
    if config.gateway_only:
        return None
    from salon.engine.ray_start import RayStart

    return RayStart(config).begin()


async def _serve(config: Config, ray_start: RayStart | None = None) -> int:
    from salon.engine.app import Engine
    from salon.engine.config import is_loopback
    from salon.storage.urls import redact_url

    stop = asyncio.Event()
    engine = Engine(config, ray_start=ray_start)
    say = Announcer(config).say
    try:
        await engine.start()
        # After start: until then SIGTERM exits through SystemExit (as ray.init sets it), which would skip the drain.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tls = (
            "TLS" + (" + client certificates" if config.tls_client_ca_file else "")
            if config.tls_cert_file
            else "plaintext"
        )
        say(
            f"[bold green]salon[/] gRPC gateway on [bold]{engine.target}[/] ({tls})",
            f"salon gRPC gateway on {engine.target} ({tls})",
        )
        if config.auth == "off":
            text = (
                f"every caller is tenant {config.default_tenant!r}, with no credentials. Allowed on loopback only; "
                "set SALON_AUTH=on and a tenants file (salon keys new) to expose Salon."
            )
            say(f"[bold red]AUTH IS OFF[/]: {text}", f"AUTH IS OFF: {text}", warning=True)
        else:
            text = f"auth on: API keys from {config.tenants_file or '(no tenants file)'}"
            say(text, text)
            if not config.tls_cert_file and not is_loopback(config.grpc_host):
                text = (
                    "no TLS on a non-loopback address: API keys travel in clear "
                    "(set SALON_TLS_CERT_FILE and SALON_TLS_KEY_FILE, or terminate TLS in front of Salon)"
                )
                say(f"[bold yellow]warning[/]: {text}", text, warning=True)
        text = (
            f"NATS {redact_url(engine.nats_url)}{' (embedded)' if not config.nats_url else ''}; "
            f"data in {config.data_path}"
        )
        say(text, text)
        if config.gateway_only:
            text = "gateway only: turns run on the deployment's hosts"
        else:
            text = f"{config.num_hosts} session hosts on Ray; model provider: {config.model_provider}"
        say(text, text)
        await _announce_web(engine, config, say)
        text = "Ctrl-C stops intake, lets running turns finish, then shuts down."
        say(text, text)
        await stop.wait()
        text = f"stopping: running turns get up to {config.shutdown_grace_s:.0f} s …"
        say(text, text)
    finally:
        await engine.close()
    say("stopped", "stopped")
    return 0


async def _announce_web(engine: Any, config: Config, say: Any) -> None:
    """Where the web bridge listens and, while auth is off (loopback only), a chat page link for a new session."""
    if not engine.web_url:
        return
    from salon.bridge import mint_page_link

    text = f"web bridge and chat page on {engine.web_url}"
    say(f"[bold green]web[/]: {text}", text)
    if config.auth == "off":
        link = await mint_page_link(engine.target, engine.web_url)
        text = f"chat page for a new session (token valid 1 h): {link.url}"
        say(f"open the {text}", f"open the {text}", wrap=False)
    else:
        text = "page tokens come from your backend (IssueSessionToken), or: salon token --api-key KEY --web URL"
        say(text, text)


async def _token(args: argparse.Namespace) -> int:
    import grpc

    from salon.bridge import mint_page_link
    from salon.client.chat import credentials_from
    from salon.v1 import token_service_pb2 as tok_pb2

    found = credentials_from(args)
    rights = []
    for name in (n.strip() for n in args.rights.split(",") if n.strip()):
        value = getattr(tok_pb2, f"TOKEN_RIGHT_{name.upper()}", None)
        if value is None or name.lower() == "create_sessions":
            print(f"salon token: unknown right {name!r}", file=sys.stderr)
            return 2
        rights.append(value)
    credentials = None
    if "root_certificates" in found:
        credentials = grpc.ssl_channel_credentials(
            found["root_certificates"], found.get("client_key"), found.get("client_certificate")
        )
    try:
        link = await mint_page_link(
            args.target,
            args.web or "",
            session_id=args.session,
            user=args.user,
            ttl_s=args.ttl,
            rights=rights,
            api_key=found.get("api_key", ""),
            credentials=credentials,
        )
    except grpc.aio.AioRpcError as exc:
        reason = dict(exc.trailing_metadata() or ()).get("salon-error-reason", exc.code().name)
        print(f"salon token: {exc.details()} ({reason})", file=sys.stderr)
        return 1
    url = link.url if args.web else ""
    if args.env:
        import shlex

        print(f"SALON_SESSION={shlex.quote(link.session_id)}")
        print(f"SALON_TOKEN={shlex.quote(link.token)}")
        print(f"SALON_PAGE_URL={shlex.quote(url)}")
    else:
        expires = link.expire_time.isoformat()
        print(json.dumps({"session_id": link.session_id, "token": link.token, "expire_time": expires, "url": url}))
    return 0


async def _demo(config: Config, ray_start: RayStart | None = None) -> int:
    from salon.engine.app import Engine
    from salon.engine.demo import run_demo
    from salon.storage.urls import redact_url

    console = _console()
    started = time.perf_counter()
    console.print("[bold]Starting Salon on embedded defaults[/] (nats-server, local Ray, offline responder) …")
    async with Engine(config, ray_start=ray_start) as engine:
        console.print(
            f"up in {time.perf_counter() - started:.1f} s: gateway {engine.target}, "
            f"NATS {redact_url(engine.nats_url)}, {config.num_hosts} hosts"
        )
        link = None
        if engine.web_url:
            from salon.bridge import mint_page_link

            link = await mint_page_link(engine.target, engine.web_url, system_prompt="You help people plan trips.")
            console.print(f"chat page (a session of its own, token valid 1 h): {link.url}", soft_wrap=True)
        ok = await run_demo(engine.target, console)
        if link is not None and console.is_terminal and sys.stdin.isatty():
            # On a terminal the page stays usable after the scripted turns, until the person is done with it.
            console.print(f"The chat page is still open at {link.url}", soft_wrap=True)
            with contextlib.suppress(EOFError):
                await asyncio.to_thread(input, "Press Enter to stop the demo. ")
        console.print("shutting down …")
    console.print("[green]done[/]" if ok else "[red]some turns did not complete[/]")
    return 0 if ok else 1


async def _chat(config: Config, args: argparse.Namespace) -> int:
    from salon.client.chat import chat, credentials_from

    target, session, system = args.target, args.session, args.system
    if target:
        return await chat(target, session, system, credentials=credentials_from(args))
    from salon.engine.app import Engine

    _console(stderr=True).print("starting an embedded engine for this chat (use --target to join a running one) …")
    async with Engine(config) as engine:
        return await chat(engine.target, session, system)


async def _export(config: Config, args: argparse.Namespace) -> int:
    from salon.engine.export import export_session

    output = Path(args.output or f"{args.session}.{'parquet' if args.format == 'parquet' else 'arrow'}")
    tenant = args.tenant or config.default_tenant
    options = config.lancedb_storage_options()
    count = await export_session(
        config.lancedb_location, tenant, args.session, output, args.format, storage_options=options
    )
    _console(stderr=True).print(f"wrote {count} turns of session {args.session} to {output}")
    return 0


async def _ingest(args: argparse.Namespace) -> int:
    from salon.client.chat import credentials_from
    from salon.engine.ingest import FileFilter, ingest_paths

    return await ingest_paths(
        args.target,
        args.paths,
        _console(stderr=True),
        batch=args.batch,
        credentials=credentials_from(args),
        file_filter=FileFilter(include=tuple(args.include), exclude=tuple(args.exclude)),
        collection=args.collection,
    )


async def _hosts(config: Config, count: int) -> int:
    from salon.engine.extra_hosts import ExtraHosts

    say = Announcer(config).say
    extra = ExtraHosts(config, count)
    stop = asyncio.Event()
    try:
        await extra.start()
        # After start: ray.init() installs its own SIGTERM handler (sys.exit), which would skip giving shards back.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        served = sorted(s for shards in (await extra.shards()).values() for s in shards)
        text = f"{count} session host(s) joined the deployment, serving shards {served}"
        say(text, text)
        await stop.wait()
        text = "stopping: giving the shards back to the deployment's other hosts …"
        say(text, text)
    finally:
        await extra.close()
    say("stopped", "stopped")
    return 0


async def _reembed(config: Config, *, everything: bool) -> int:
    from salon.engine.reembed import reembed_with_progress

    return await reembed_with_progress(config, _console(stderr=True), everything=everything)


def _new_key(tenant: str, *, admin: bool) -> int:
    from salon.engine.tenants import key_entry_toml, new_key
    from salon.storage.ids import require_id

    require_id(tenant, "tenant")
    key, key_id, digest = new_key()
    print(key, flush=True)
    # Instructions on stderr, so `salon keys new --tenant t > key.txt` captures the key alone.
    print(
        f"The key above is shown once; Salon keeps only its SHA-256. Key id: {key_id}\n"
        f"Add this line to [tenants.{tenant}] keys = [ ... ] in the tenants file (taken up without a restart):\n"
        f"  {key_entry_toml(tenant, key_id, digest, admin=admin)}\n"
        "Revoke the key by deleting its line.",
        file=sys.stderr,
    )
    return 0


async def _usage(config: Config, args: argparse.Namespace) -> int:
    from rich.table import Table

    from salon.client import SalonClient
    from salon.client import SalonError as ClientError
    from salon.client.chat import credentials_from

    target = args.target or f"{config.grpc_host}:{config.grpc_port}"
    try:
        async with SalonClient(target, timeout_s=10.0, **credentials_from(args)) as client:
            usage = await client.get_usage(args.tenant or "", all_tenants=args.all)
    except ClientError as exc:
        print(f"salon usage: {exc.message} ({exc.code.name})", file=sys.stderr)
        return 1
    fields = ("turns_per_minute", "concurrent_turns", "tokens_per_day", "max_message_bytes", "max_sessions")
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "tenant_id": u.tenant_id,
                "turns_last_minute": u.turns_last_minute,
                "concurrent_turns": u.concurrent_turns,
                "tokens_today": u.tokens_today,
                "sessions": u.sessions,
                "limits": {name: getattr(u.limits, name) for name in fields},
            }
            for u in usage
        ]
        print(json.dumps(rows, indent=2))
        return 0

    def of(value: int, limit: int) -> str:
        return f"{value} / {limit}" if limit else f"{value}"

    table = Table(title=f"Usage on {target} (counted by this gateway; limits after '/')")
    for column in ("tenant", "turns last minute", "concurrent turns", "tokens today", "sessions", "max message"):
        table.add_column(column)
    for u in usage:
        lim = u.limits
        table.add_row(
            u.tenant_id,
            of(u.turns_last_minute, lim.turns_per_minute),
            of(u.concurrent_turns, lim.concurrent_turns),
            of(u.tokens_today, lim.tokens_per_day),
            of(u.sessions, lim.max_sessions),
            f"{lim.max_message_bytes or '-'}",
        )
    _console().print(table)
    return 0


def _trace(config: Config, args: argparse.Namespace) -> int:
    from salon import otel

    if not args.turn and not args.last:
        print("salon trace: give a TURN_ID or --last", file=sys.stderr)
        return 2
    source = args.file or otel.TelemetrySettings.from_config(config).directory
    spans = otel.find_trace(otel.read_spans(source), turn_id=args.turn or "", last=args.last)
    if not spans:
        what = f"turn {args.turn}" if args.turn else "any turn"
        print(
            f"salon trace: no spans of {what} in {source}; spans are written only while the engine runs with "
            "SALON_TELEMETRY=jsonl",
            file=sys.stderr,
        )
        return 1
    print(otel.render_trace(spans), end="")
    return 0


def _print_config(markdown: bool) -> int:
    from rich.table import Table

    from salon.engine.config import describe, markdown_table

    if markdown:
        print(markdown_table(), end="")
        return 0
    table = Table(title="Salon settings (environment, or the same names in lower case in a TOML file)")
    for column in ("variable", "default", "meaning"):
        table.add_column(column)
    for row in describe():
        table.add_row(*row)
    _console().print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``salon``."""
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _print_config(args.markdown)
    if args.command == "ingest":
        try:
            return asyncio.run(_ingest(args))
        except KeyboardInterrupt:
            return 130
    from salon.storage.errors import SalonError

    try:
        return _run(args)
    except SalonError as exc:
        print(f"salon: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        config = _config(
            args,
            grpc_host=args.host,
            grpc_port=args.port,
            data_dir=args.data_dir,
            gateway_only=args.gateway_only,
            web_port=args.web,
        )
        _setup_logging(config)
        return asyncio.run(_serve(config, _begin_ray(config)))
    if args.command == "demo":
        with contextlib.ExitStack() as stack:
            data_dir = args.data_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="salon-demo-"))
            # Quiet by default: the demo's own output is the point (every process logs warnings only).
            config = _config(args, data_dir=str(Path(data_dir)), grpc_port=0, log_level="WARNING", web_port=args.web)
            _setup_logging(config)
            return asyncio.run(_demo(config, _begin_ray(config)))
    if args.command == "export":
        return asyncio.run(_export(_config(args, data_dir=args.data_dir), args))
    if args.command == "trace":
        return _trace(_config(args, data_dir=args.data_dir), args)
    if args.command == "chat":
        config = _config(args, grpc_port=0, log_level="WARNING")
        _setup_logging(config)
        return asyncio.run(_chat(config, args))
    if args.command == "keys":
        return _new_key(args.tenant, admin=args.admin)
    if args.command == "usage":
        return asyncio.run(_usage(_config(args), args))
    if args.command == "token":
        return asyncio.run(_token(args))
    if args.command == "hosts":
        config = _config(args)
        _setup_logging(config)
        return asyncio.run(_hosts(config, args.count))
    if args.command == "reembed":
        return asyncio.run(_reembed(_config(args, data_dir=args.data_dir), everything=args.all))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
