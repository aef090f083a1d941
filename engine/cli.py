"""The ``salon`` command: run the engine, watch a demo, chat, inspect configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.config import Config, describe, is_loopback, markdown_table
from salon.client.chat import add_credential_arguments
from storage.errors import SalonError
from storage.ids import require_id
from storage.urls import redact_url

DESCRIPTION = """Salon: a conversation engine. Sessions are stateful actors on Ray, turns travel over NATS
JetStream, and answers stream back token by token over gRPC.

Without configuration everything runs on this machine: an embedded nats-server, local Ray and the
offline responder, which answers from what the session holds and says so. Settings come from SALON_*
environment variables and an optional TOML file (--config); `salon config` lists them."""


def _config(args: argparse.Namespace, **overrides: object) -> Config:
    config = Config.load(args.config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**changes) if changes else config


def _setup_logging(config: Config) -> None:
    import otel

    otel.setup_logging(config.log_level, config.log_format, process="gateway")


async def _serve(config: Config) -> int:
    from engine.app import Engine

    stop = asyncio.Event()
    engine = Engine(config)
    console = Console(stderr=True)
    try:
        await engine.start()
        # After start: ray.init() installs its own SIGTERM handler (sys.exit), which would skip the drain.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tls = (
            "TLS" + (" + client certificates" if config.tls_client_ca_file else "")
            if config.tls_cert_file
            else "plaintext"
        )
        console.print(f"[bold green]salon[/] gRPC gateway on [bold]{engine.target}[/] ({tls})")
        if config.auth == "off":
            console.print(
                f"[bold red]AUTH IS OFF[/]: every caller is tenant {config.default_tenant!r}, with no credentials. "
                "Allowed on loopback only; set SALON_AUTH=on and a tenants file (salon keys new) to expose Salon."
            )
        else:
            console.print(f"auth on: API keys from {config.tenants_file or '(no tenants file)'}")
            if not config.tls_cert_file and not is_loopback(config.grpc_host):
                console.print(
                    "[bold yellow]warning[/]: no TLS on a non-loopback address: API keys travel in clear "
                    "(set SALON_TLS_CERT_FILE and SALON_TLS_KEY_FILE, or terminate TLS in front of Salon)"
                )
        console.print(
            f"NATS {redact_url(engine.nats_url)}{' (embedded)' if not config.nats_url else ''}; "
            f"data in {config.data_path}"
        )
        if config.gateway_only:
            console.print("gateway only: turns run on the deployment's hosts")
        else:
            console.print(f"{config.num_hosts} session hosts on Ray; model provider: {config.model_provider}")
        console.print("Ctrl-C stops intake, lets running turns finish, then shuts down.")
        await stop.wait()
        console.print(f"stopping: running turns get up to {config.shutdown_grace_s:.0f} s …")
    finally:
        await engine.close()
    console.print("stopped")
    return 0


async def _demo(config: Config) -> int:
    from engine.app import Engine
    from engine.demo import run_demo

    console = Console()
    started = time.perf_counter()
    console.print("[bold]Starting Salon on embedded defaults[/] (nats-server, local Ray, offline responder) …")
    async with Engine(config) as engine:
        console.print(
            f"up in {time.perf_counter() - started:.1f} s: gateway {engine.target}, "
            f"NATS {redact_url(engine.nats_url)}, {config.num_hosts} hosts"
        )
        ok = await run_demo(engine.target, console)
        console.print("shutting down …")
    console.print("[green]done[/]" if ok else "[red]some turns did not complete[/]")
    return 0 if ok else 1


async def _chat(config: Config, args: argparse.Namespace) -> int:
    from salon.client.chat import chat, credentials_from

    target, session, system = args.target, args.session, args.system
    if target:
        return await chat(target, session, system, credentials=credentials_from(args))
    from engine.app import Engine

    Console(stderr=True).print("starting an embedded engine for this chat (use --target to join a running one) …")
    async with Engine(config) as engine:
        return await chat(engine.target, session, system)


async def _export(config: Config, args: argparse.Namespace) -> int:
    from engine.export import export_session

    output = Path(args.output or f"{args.session}.{'parquet' if args.format == 'parquet' else 'arrow'}")
    tenant = args.tenant or config.default_tenant
    count = await export_session(config.lancedb_location, tenant, args.session, output, args.format)
    Console(stderr=True).print(f"wrote {count} turns of session {args.session} to {output}")
    return 0


async def _ingest(args: argparse.Namespace) -> int:
    from engine.ingest import ingest_paths
    from salon.client.chat import credentials_from

    console = Console(stderr=True)
    return await ingest_paths(args.target, args.paths, console, batch=args.batch, credentials=credentials_from(args))


INGEST_HELP = """Send .txt and .md files to a running engine's knowledge base (KnowledgeService.IngestDocuments).

Each file becomes one document, chunked with overlap and embedded by the engine. Directories are walked
for .txt/.md files. A file's document id comes from its path (guides/setup.md -> guides-setup-md), so
ingesting the same files again replaces their documents. A progress bar counts documents and chunks as the
engine stores them; files that fail (empty, too large, not UTF-8, ...) are listed at the end with the
reason, and the others are stored regardless. Exit status: 0 all stored, 1 some failed, 2 the engine could
not be reached or refused the request."""


def _new_key(tenant: str, *, admin: bool) -> int:
    from engine.tenants import key_entry_toml, new_key

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
        rows = [
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
    Console().print(table)
    return 0


def _trace(config: Config, args: argparse.Namespace) -> int:
    import otel

    if not args.turn and not args.last:
        print("salon trace: give a TURN_ID or --last", file=sys.stderr)
        return 2
    source = args.file or otel.TelemetrySettings.from_config(config).directory
    spans = otel.find_trace(otel.read_spans(source), turn_id=args.turn or "", last=args.last)
    if not spans:
        what = f"turn {args.turn}" if args.turn else "any turn"
        print(f"salon trace: no spans of {what} in {source} (is telemetry=jsonl?)", file=sys.stderr)
        return 1
    print(otel.render_trace(spans), end="")
    return 0


def _print_config(markdown: bool) -> int:
    if markdown:
        print(markdown_table(), end="")
        return 0
    rows = describe()
    table = Table(title="Salon settings (environment, or the same names in lower case in a TOML file)")
    for column in ("variable", "default", "meaning"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``salon`` command line."""
    parser = argparse.ArgumentParser(
        prog="salon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="TOML file with settings (default: $SALON_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the engine until Ctrl-C / SIGTERM")
    serve.add_argument("--host", help="gRPC listen address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default from config: 50051; 0 picks one)")
    serve.add_argument("--data-dir", help="data directory (default from config: ./.salon)")
    serve.add_argument(
        "--gateway-only",
        action="store_true",
        default=None,
        help="run only a gateway for an existing deployment (needs SALON_NATS_URL, the same namespace and data)",
    )

    demo = sub.add_parser(
        "demo", help="start the engine, stream a short conversation on three sessions in parallel, stop"
    )
    demo.add_argument("--data-dir", help="keep the demo's data here (default: a temporary directory)")

    chat = sub.add_parser("chat", help="chat in the terminal (starts an embedded engine unless --target)")
    chat.add_argument("--target", help="host:port of a running gateway")
    chat.add_argument("--session", default="", help="continue this session")
    chat.add_argument("--system", default="", help="system prompt of a new session")
    add_credential_arguments(chat)

    keys = sub.add_parser("keys", help="make API keys for the tenants file")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = keys_sub.add_parser("new", help="print a new key and the line that enables it in the tenants file")
    new.add_argument("--tenant", required=True, help="tenant the key belongs to")
    new.add_argument("--admin", action="store_true", help="the key may also read every tenant's usage")

    usage = sub.add_parser("usage", help="a tenant's usage against its limits, from a running gateway")
    usage.add_argument("--target", help="host:port of the gateway (default from config: grpc_host:grpc_port)")
    usage.add_argument("--tenant", help="another tenant (needs an admin key)")
    usage.add_argument("--all", action="store_true", help="every tenant (needs an admin key)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    add_credential_arguments(usage)

    export = sub.add_parser(
        "export",
        help="write a session's transcript as Parquet or Arrow IPC (reads the data directory; works offline)",
    )
    export.add_argument("session", help="session id")
    export.add_argument("--format", choices=("parquet", "arrow"), default="parquet", help="default: %(default)s")
    export.add_argument("--output", "-o", help="file to write (default: SESSION.parquet or SESSION.arrow)")
    export.add_argument("--tenant", help="tenant of the session (default: the configured default tenant)")
    export.add_argument("--data-dir", help="data directory (default from config: ./.salon)")

    trace = sub.add_parser("trace", help="print a turn's spans as a waterfall, from the jsonl span files")
    trace.add_argument("turn", nargs="?", default="", help="turn id (as in the accepted event)")
    trace.add_argument("--last", action="store_true", help="the most recent turn instead")
    trace.add_argument("--file", help="span file, or directory of them (default: telemetry_dir or DATA_DIR/traces)")
    trace.add_argument("--data-dir", help="data directory (default from config: ./.salon)")

    ingest = sub.add_parser(
        "ingest",
        help="send .txt/.md files to a running engine's knowledge base, with a progress bar",
        description=INGEST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (.txt, .md)")
    ingest.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gateway (default: %(default)s)")
    ingest.add_argument("--batch", type=int, default=8, help="documents per request message (default: %(default)s)")
    add_credential_arguments(ingest)

    config = sub.add_parser("config", help="list every setting with its default and meaning")
    config.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


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
    try:
        if args.command == "serve":
            config = _config(
                args, grpc_host=args.host, grpc_port=args.port, data_dir=args.data_dir, gateway_only=args.gateway_only
            )
            _setup_logging(config)
            return asyncio.run(_serve(config))
        if args.command == "demo":
            with contextlib.ExitStack() as stack:
                data_dir = args.data_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="salon-demo-"))
                # Quiet by default: the demo's own output is the point (every process logs warnings only).
                config = _config(args, data_dir=str(Path(data_dir)), grpc_port=0, log_level="WARNING")
                _setup_logging(config)
                return asyncio.run(_demo(config))
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
    except SalonError as exc:
        print(f"salon: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
