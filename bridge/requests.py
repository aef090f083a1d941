"""Reading what a browser sends: bounded JSON bodies into API messages, ids from paths, the last event id.

Every refusal is a :class:`~salon.bridge.errors.BridgeError` with a fixed message: nothing of the request is echoed
(not even the name of an unknown field, which the protobuf parser would put in its own message).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request

from salon.bridge.errors import BridgeError, bad_request

M = TypeVar("M", bound=Message)

LAST_EVENT_ID = "last-event-id"
AFTER_QUERY = "after"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 ``BODY_TOO_LARGE`` past it, without reading the rest)."""
    too_large = BridgeError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "BODY_TOO_LARGE",
        f"the request body must be at most {limit} bytes",
        status=413,
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_message(request: Request, message: M, limit: int) -> M:
    """Fill ``message`` from a JSON body in protobuf's JSON mapping (an empty body leaves it empty)."""
    body = await read_body(request, limit)
    if not body.strip():
        return message
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise BridgeError(
            grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE", "send the body as application/json", status=415
        )
    try:
        value: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("MALFORMED_JSON", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request("MALFORMED_REQUEST", "the body must be a JSON object")
    name = message.DESCRIPTOR.name
    try:
        json_format.ParseDict(value, message)
        message.SerializeToString()  # text that cannot be encoded (lone surrogates) fails here, not upstream
    except Exception:
        raise bad_request("MALFORMED_REQUEST", f"the body is not a valid {name} in JSON") from None
    return message


def after_seq(request: Request) -> int:
    """Where a resumed stream starts: the ``Last-Event-ID`` header (EventSource sends it when it reconnects),
    else the ``after`` query parameter, else 0 (from the first event)."""
    raw = request.headers.get(LAST_EVENT_ID)
    if raw is None:
        raw = request.query_params.get(AFTER_QUERY, "0")
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19:
        raise bad_request("BAD_LAST_EVENT_ID", "Last-Event-ID (or after) must be an event's sequence number")
    return int(raw)
