#!/opt/salon/bin/python
"""Probe Salon's gRPC health service (``grpc.health.v1.Health/Check``): exit 0 when SERVING, 1 otherwise.

The image's HEALTHCHECK runs it. The target is ``SALON_HEALTH_TARGET``, else ``127.0.0.1:`` and the gateway's
``SALON_GRPC_PORT`` (50051). ``SALON_HEALTH_TLS_CA`` (a PEM file) makes the probe speak TLS and verify the
gateway's certificate with it; a gateway that requires client certificates is probed by the load balancer or
Kubernetes instead. Health answers without credentials, so the probe sends none.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 4.0


def target() -> str:
    """Where the gateway listens, seen from inside its container."""
    return os.environ.get("SALON_HEALTH_TARGET") or f"127.0.0.1:{os.environ.get('SALON_GRPC_PORT') or '50051'}"


def check(address: str, service: str = "", ca_file: str = "") -> bool:
    """Whether ``service`` ("" is the whole server) reports SERVING at ``address``."""
    if ca_file:
        credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return False
    serving = bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    if not serving:
        print(f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr)
    return serving


def main() -> int:
    """Entry point."""
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    return 0 if check(target(), service, os.environ.get("SALON_HEALTH_TLS_CA", "")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
