"""``python -m bridge``: the web bridge alone, in front of a gateway that runs elsewhere.

The engine runs the same bridge in its own process with ``salon serve --web PORT``; run it apart when browsers
should reach a separate tier (several bridges behind a load balancer, say). It needs no secret: every call it
makes carries the browser's session token, which the gateway verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import grpc

from salon.bridge.server import DEFAULT_PAGE_DIR, BridgeSettings, WebBridge


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bridge", description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gateway (default: %(default)s)")
    parser.add_argument("--tls-ca", help="PEM CA file verifying the gateway's certificate: TLS to the gateway")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 0 picks one (default: %(default)s)")
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="an origin whose pages may call the bridge (CORS); repeatable",
    )
    parser.add_argument("--no-page", action="store_true", help="serve the API only, not the example chat page")
    return parser


async def serve(args: argparse.Namespace, credentials: grpc.ChannelCredentials | None) -> None:
    """Run the bridge until SIGINT or SIGTERM."""
    settings = BridgeSettings(
        host=args.host,
        port=args.port,
        allowed_origins=tuple(args.allowed_origin),
        page_dir=None if args.no_page else DEFAULT_PAGE_DIR,
    )
    bridge = WebBridge(args.target, settings, credentials=credentials)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    print(f"web bridge on {bridge.url}, gateway {args.target}", flush=True)
    try:
        await stop.wait()
    finally:
        await bridge.close()


def main() -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args()
    credentials = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes()) if args.tls_ca else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, credentials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
