"""The ``salon`` command line: every command, its description and its options (argparse only).

Kept apart from the commands themselves, and free of imports beyond the standard library, so that
``salon --help`` answers at once.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """Salon: a conversation engine. Sessions are stateful actors on Ray, turns travel over NATS
JetStream, and answers stream back token by token over gRPC.

Without configuration everything runs on this machine: an embedded nats-server, local Ray and the
offline responder, which answers from what the session holds and says so. Settings come from SALON_*
environment variables and an optional TOML file (--config); `salon config` lists them.

Five minutes: `salon serve` in one terminal; `salon chat --target 127.0.0.1:50051` in another;
`salon ingest docs/ --target 127.0.0.1:50051` to give sessions something to cite; run the engine with
SALON_TELEMETRY=jsonl and `salon trace --last` shows where a turn's time went."""

SERVE_HELP = """Run the engine until Ctrl-C or SIGTERM: an embedded nats-server (unless SALON_NATS_URL is set),
local Ray with the session hosts and the batch writer, and the gRPC gateway (ConversationService,
KnowledgeService, AdminService, health, reflection).

The engine reports SERVING on gRPC health once it takes turns, and prints where it listens. On Ctrl-C or
SIGTERM intake stops, running turns get shutdown_grace_s to finish, then everything stops in order and no
process is left behind. Data (the NATS store, LanceDB tables) stays in the data directory for the next
start."""

DEMO_HELP = """Start an engine on embedded defaults in a temporary directory, ingest three small documents into
the knowledge base, run two turns on each of three sessions in parallel (each session's answers shown as
they stream, with the passages they cited and the time to their first token), print a summary table,
stop everything and exit 0 when every turn completed. Needs no configuration and no network: without a
model configured, the offline responder answers."""

CHAT_HELP = """Chat with a session in the terminal; answers are printed as they stream in. With --target,
talk to a running engine (`salon serve`); without, start an embedded engine just for this chat and stop it
when you leave. Type /help inside the chat for its commands (/new, /session, /quit)."""

EXPORT_HELP = """Write one session's transcript as Parquet or Arrow IPC, in the transcripts table's schema (turn
index, request, reply, stop reason, usage, timings, what entered the prompt, trace id). Reads the data
directory's LanceDB tables directly, so it works with the engine stopped; turns the batch writer has not
flushed yet are not in it."""

TRACE_HELP = """Print a turn's spans as a waterfall with durations (gateway, NATS, host, session actor, model
call, retrieval, ledger), read from the jsonl span files every process of the engine writes.

Needs telemetry on: run the engine with SALON_TELEMETRY=jsonl (files go to SALON_TELEMETRY_DIR, default
DATA_DIR/traces). With telemetry off there are no spans, and this command says so."""

CONFIG_HELP = """List every setting with its environment variable, its default and what it means. Settings come
from SALON_* environment variables over an optional TOML file (--config or SALON_CONFIG; the same names in
lower case)."""

USAGE_HELP = """Show a tenant's usage against its limits (turns in the last minute, turns streaming now, model
tokens today, sessions, largest message), as counted by a running gateway (AdminService.GetUsage). Your own
tenant by default; --tenant and --all need an admin key."""

INGEST_HELP = """Send .txt, .md, .html, .pdf and .docx files to a running engine's knowledge base
(KnowledgeService.IngestDocuments).

Each file becomes one document, chunked with overlap and embedded by the engine. Directories are walked
for .txt/.md/.html/.pdf/.docx files, skipping hidden files and folders, vendored folders (node_modules, .venv, venv,
__pycache__, *.egg-info, site-packages, dist, build) and, inside a git work tree, the files git ignores;
--include and --exclude add glob patterns of their own. A file's document id comes from its path
(guides/setup.md -> guides-setup-md), so ingesting the same files again replaces their documents. A
progress bar counts documents and chunks as the engine stores them; files that fail (empty, too large, not
UTF-8, ...) are listed at the end with the reason, and the others are stored regardless. Exit status: 0 all
stored, 1 some failed, 2 the engine could not be reached or refused the request."""

KEYS_HELP = """Make API keys for the tenants file (SALON_TENANTS_FILE). A key is printed once; Salon keeps only
its SHA-256."""

KEYS_NEW_HELP = """Print a new API key on stdout and, on stderr, the line that enables it in the tenants file
(taken up without a restart). `salon keys new --tenant acme > key.txt` keeps the key alone in the file."""

TOKEN_HELP = """Mint a session token for a browser (SessionTokenService.IssueSessionToken) on a running engine,
with this machine's credentials (an API key or a client certificate; none while auth is off), for --session
or for a new session, and print it with the chat page's URL. This is what a frontend's backend does before it
hands a page its token; the API key itself never reaches the page. --env prints shell assignments
(SALON_SESSION, SALON_TOKEN, SALON_PAGE_URL) for `eval "$(salon token --env …)"`."""

REEMBED_HELP = """Re-embed long-term memories and knowledge chunks with the configured embedding model
(embedding_model), with a progress bar. Needed after the model changes: the engine refuses to start on tables
embedded by another model (reason EMBEDDING_MODEL_MISMATCH). Memories are rebuilt from their turns, so they
also get the current indexed text (speaker and date). Run it with the engine stopped; it can be interrupted
and run again."""
HOSTS_HELP = """Run more session hosts for a running deployment until Ctrl-C / SIGTERM: they join through its
NATS (SALON_NATS_URL, the same SALON_NAMESPACE) and take about their share of the shards by lease from the hosts
already there; on stop they give the shards back first (running turns get shutdown_grace_s), so scaling in loses
nothing. Needs shard leases (SALON_SHARD_LEASE_S > 0, the default) and the deployment's LanceDB location and
tenants file. Runs on the Ray cluster at SALON_RAY_ADDRESS, or on a Ray of its own on this machine."""
DATA_DIR_HELP = "data directory (default from config: ./.salon)"
WEB_HELP = (
    "also serve the web bridge (HTTP JSON and Server-Sent Events) and the chat page on this port "
    "(0 picks one; default from config: off)"
)


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """``--api-key``, ``--tls-ca``, ``--tls-cert`` and ``--tls-key``: the options of
    :func:`salon.client.chat.add_credential_arguments` (a unit test keeps them the same), declared here so
    that building the parser imports no gRPC."""
    parser.add_argument(
        "--api-key", default=None, help="API key sent as 'authorization: Bearer' (default: $SALON_API_KEY)"
    )
    parser.add_argument("--tls-ca", default=None, help="PEM CA file verifying the server: turns TLS on")
    parser.add_argument("--tls-cert", default=None, help="PEM client certificate for mutual TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_ingest_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``salon ingest``."""
    ingest = _command(
        sub, "ingest", "send text, markdown, HTML, PDF and DOCX files to a running engine's knowledge base", INGEST_HELP
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (.txt, .md, .html, .pdf, .docx)")
    ingest.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gateway (default: %(default)s)")
    ingest.add_argument("--batch", type=int, default=8, help="documents per request message (default: %(default)s)")
    ingest.add_argument(
        "--collection",
        default="",
        metavar="NAME",
        help="the knowledge collection the documents belong to (searches and sessions can be limited to it)",
    )
    ingest.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="also take files matching this pattern that would be skipped (hidden, vendored or git-ignored); "
        "repeatable, matched against the path under the folder, e.g. '.github/**/*.md'",
    )
    ingest.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files matching this pattern, e.g. 'drafts/**'; repeatable, wins over --include",
    )
    add_credential_arguments(ingest)


def _add_token_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = _command(sub, "token", "mint a session token and chat page link for a browser", TOKEN_HELP)
    token.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gateway (default: %(default)s)")
    token.add_argument("--web", default="", metavar="URL", help="base URL of the web bridge, for the page link")
    token.add_argument("--session", default="", help="the session (default: a new one)")
    token.add_argument("--user", default="", help="who the token is for, as your application names them")
    token.add_argument(
        "--rights",
        default="send,resume,cancel,read,tools,approve",
        help="comma-separated: send, resume, cancel, read, tools, approve (default: %(default)s)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token lives (default: %(default)s)")
    token.add_argument("--env", action="store_true", help="print shell assignments instead of JSON")
    add_credential_arguments(token)


def _add_maintenance_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reembed = _command(
        sub, "reembed", "re-embed memories and knowledge with the configured model, with a progress bar", REEMBED_HELP
    )
    reembed.add_argument("--data-dir", help=DATA_DIR_HELP)
    reembed.add_argument(
        "--all", action="store_true", help="every row, not only those embedded by another model (rebuilds texts too)"
    )
    hosts = _command(sub, "hosts", "run more session hosts for a running deployment (scale out and in)", HOSTS_HELP)
    hosts.add_argument("--count", type=int, default=1, help="how many hosts to run (default 1)")
    config = _command(sub, "config", "list every setting with its default and meaning", CONFIG_HELP)
    config.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")


def build_parser() -> argparse.ArgumentParser:
    """The ``salon`` command line."""
    parser = argparse.ArgumentParser(
        prog="salon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="TOML file with settings (default: $SALON_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(sub, "serve", "run the engine until Ctrl-C / SIGTERM", SERVE_HELP)
    serve.add_argument("--host", help="gRPC listen address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default from config: 50051; 0 picks one)")
    serve.add_argument("--data-dir", help=DATA_DIR_HELP)
    serve.add_argument(
        "--gateway-only",
        action="store_true",
        default=None,
        help="run only a gateway for an existing deployment (needs SALON_NATS_URL, the same namespace and data)",
    )
    serve.add_argument("--web", type=int, metavar="PORT", help=WEB_HELP)

    demo = _command(
        sub, "demo", "start the engine, stream a short conversation on three sessions in parallel, stop", DEMO_HELP
    )
    demo.add_argument("--data-dir", help="keep the demo's data here (default: a temporary directory)")
    demo.add_argument(
        "--web",
        type=int,
        default=0,
        metavar="PORT",
        help="port of the chat page the demo prints a link to (default: one that is free)",
    )

    chat = _command(sub, "chat", "chat in the terminal (starts an embedded engine unless --target)", CHAT_HELP)
    chat.add_argument("--target", help="host:port of a running gateway (default: start an embedded engine)")
    chat.add_argument("--session", default="", help="continue this session instead of opening a new one")
    chat.add_argument("--system", default="", help="system prompt of a new session")
    add_credential_arguments(chat)

    keys = _command(sub, "keys", "make API keys for the tenants file", KEYS_HELP)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = _command(keys_sub, "new", "print a new key and the line that enables it in the tenants file", KEYS_NEW_HELP)
    new.add_argument("--tenant", required=True, help="tenant the key belongs to")
    new.add_argument("--admin", action="store_true", help="the key may also read every tenant's usage")

    usage = _command(sub, "usage", "a tenant's usage against its limits, from a running gateway", USAGE_HELP)
    usage.add_argument("--target", help="host:port of the gateway (default from config: grpc_host:grpc_port)")
    usage.add_argument("--tenant", help="another tenant (needs an admin key)")
    usage.add_argument("--all", action="store_true", help="every tenant (needs an admin key)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_credential_arguments(usage)

    export = _command(
        sub,
        "export",
        "write a session's transcript as Parquet or Arrow IPC (reads the data directory; works offline)",
        EXPORT_HELP,
    )
    export.add_argument("session", help="session id")
    export.add_argument(
        "--format", choices=("parquet", "arrow"), default="parquet", help="file format (default: %(default)s)"
    )
    export.add_argument("--output", "-o", help="file to write (default: SESSION.parquet or SESSION.arrow)")
    export.add_argument("--tenant", help="tenant of the session (default: the configured default tenant)")
    export.add_argument("--data-dir", help=DATA_DIR_HELP)

    trace = _command(
        sub, "trace", "print a turn's spans as a waterfall (needs SALON_TELEMETRY=jsonl on the engine)", TRACE_HELP
    )
    trace.add_argument("turn", nargs="?", default="", help="turn id (as in the accepted event)")
    trace.add_argument("--last", action="store_true", help="the most recent turn instead")
    trace.add_argument("--file", help="span file, or directory of them (default: telemetry_dir or DATA_DIR/traces)")
    trace.add_argument("--data-dir", help=DATA_DIR_HELP)

    _add_ingest_command(sub)

    _add_token_command(sub)
    _add_maintenance_commands(sub)
    return parser
