"""The web bridge's parts without sockets: SSE framing and decoding, errors as HTTP, what it reads from requests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from salon.bridge.credentials import session_token
from salon.bridge.errors import BridgeError, from_rpc_error
from salon.bridge.requests import after_seq, read_message
from salon.bridge.sse import KEEPALIVE, PREAMBLE, SseDecoder, error_frame, event_frame
from salon.bridge.streams import EventRelay
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

TOKEN = "sst1.0123abcd." + "e" * 40 + "." + "s" * 43


def request(headers: dict[str, str] | None = None, body: bytes = b"", query: str = "", method: str = "POST") -> Request:
    chunks = [body]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    scope = {
        "type": "http",
        "method": method,
        "path": "/v1/x",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive)


def test_an_event_frame_is_id_kind_and_the_events_json_on_one_line() -> None:
    event = turn_pb2.TurnEvent(session_id="s", turn_id="t", seq=7, delta=turn_pb2.TokenDelta(text="a\nb\r\u2028c"))
    frame = event_frame(event).decode()
    lines = frame.split("\n")
    assert lines[:2] == ["id: 7", "event: delta"]
    assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
    data = json.loads(lines[2].removeprefix("data: "))
    assert data == {"sessionId": "s", "turnId": "t", "seq": "7", "delta": {"text": "a\nb\r\u2028c"}}


def test_the_decoder_reads_what_the_bridge_writes_in_any_chunking() -> None:
    events = [turn_pb2.TurnEvent(seq=n, delta=turn_pb2.TokenDelta(text=f"tok{n} é")) for n in range(1, 4)]
    stream = b"retry: 1000\n\n: keepalive\n\n" + b"".join(event_frame(e) for e in events)
    stream += error_frame({"error": {"reason": "X"}})
    expected = [("1", "delta"), ("2", "delta"), ("3", "delta"), (None, "stream_error")]
    for size in (1, 2, 7, len(stream)):  # bytes cut anywhere, inside a character too
        decoder = SseDecoder()
        messages = [m for i in range(0, len(stream), size) for m in decoder.feed(stream[i : i + size])]
        assert [(m.id, m.event) for m in messages] == expected
        assert messages[0].json()["delta"]["text"] == "tok1 é"
        assert decoder.last_event_id == "3"


def test_the_decoder_takes_crlf_line_ends_split_across_chunks() -> None:
    decoder = SseDecoder()
    messages = [*decoder.feed(b"id: 1\r"), *decoder.feed(b"\ndata: x\r\n\r"), *decoder.feed(b"\n")]
    assert [(m.id, m.data) for m in messages] == [("1", "x")]


def rpc_error(code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_an_engine_refusal_keeps_its_status_reason_and_message() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many turns this minute",
            (("salon-error-reason", "TURNS_PER_MINUTE"), ("salon-retry-after-ms", "1500")),
        )
    )
    assert error.http_status == 429 and error.retryable
    assert error.body() == {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "reason": "TURNS_PER_MINUTE",
            "message": "too many turns this minute",
            "retryAfterMs": 1500,
        }
    }
    assert error.headers() == {"Retry-After": "2"}


def test_transport_errors_get_a_fixed_message_never_grpcs_text() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ipv4:10.0.0.7"))
    assert error.http_status == 503
    assert error.reason == "UNAVAILABLE"
    assert "10.0.0.7" not in json.dumps(error.body())


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_statuses_map_as_usual(code: grpc.StatusCode, status: int) -> None:
    assert BridgeError(code, "R", "m").http_status == status


def test_the_bridge_takes_a_bearer_session_token_only() -> None:
    assert session_token(request({"authorization": f"Bearer {TOKEN}"})) == TOKEN
    for headers, reason in (
        ({}, "TOKEN_REQUIRED"),
        ({"authorization": "Basic dXNlcg=="}, "TOKEN_REQUIRED"),
        ({"authorization": "Bearer salon_0123456789ab_secret"}, "API_KEY_REFUSED"),
        ({"authorization": "Bearer sst1.nothex00.a.b"}, "TOKEN_INVALID"),
    ):
        with pytest.raises(BridgeError) as caught:
            session_token(request(headers))
        assert (caught.value.http_status, caught.value.reason) == (401, reason)
    # In the URL only where allowed (event streams, for EventSource).
    with pytest.raises(BridgeError):
        session_token(request(query=f"access_token={TOKEN}"))
    assert session_token(request(query=f"access_token={TOKEN}"), allow_query=True) == TOKEN


def test_where_a_resumed_stream_starts() -> None:
    assert after_seq(request(method="GET")) == 0
    assert after_seq(request({"last-event-id": "12"}, method="GET")) == 12
    # EventSource reconnects with the header while the URL keeps its first position: the header wins.
    assert after_seq(request({"last-event-id": "12"}, query="after=3", method="GET")) == 12
    assert after_seq(request(query="after=3", method="GET")) == 3
    for bad in ("-1", "x", "1.5", "9" * 30, "١٢"):
        with pytest.raises(BridgeError) as caught:
            after_seq(request({"last-event-id": bad}, method="GET"))
        assert caught.value.reason == "BAD_LAST_EVENT_ID"


async def test_bodies_are_bounded_typed_and_parsed_into_the_message() -> None:
    json_type = {"content-type": "application/json; charset=utf-8"}
    parsed = await read_message(
        request(json_type, b'{"text": "hi", "idempotencyKey": "k"}'), cs_pb2.SendTurnRequest(), 1024
    )
    assert (parsed.text, parsed.idempotency_key) == ("hi", "k")
    assert await read_message(request({}, b""), cs_pb2.CancelTurnRequest(), 1024) == cs_pb2.CancelTurnRequest()
    for headers, body, limit, status, reason in (
        (json_type, b"x" * 2000, 1024, 413, "BODY_TOO_LARGE"),
        ({**json_type, "content-length": "5000"}, b"{}", 1024, 413, "BODY_TOO_LARGE"),
        ({"content-type": "text/plain"}, b'{"text": "hi"}', 1024, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (json_type, b"\xff\xfe", 1024, 400, "MALFORMED_JSON"),
        (json_type, b'{"secretName": 1}', 1024, 400, "MALFORMED_REQUEST"),
    ):
        with pytest.raises(BridgeError) as caught:
            await read_message(request(headers, body), cs_pb2.SendTurnRequest(), limit)
        assert (caught.value.http_status, caught.value.reason) == (status, reason)
        assert "secretName" not in caught.value.message


class FakeCall:
    """A server-streaming call: reads answer from a queue of items (messages, EOF or an error)."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False

    async def read(self) -> Any:
        item = await self.items.get()
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def response_of(event: turn_pb2.TurnEvent) -> cs_pb2.SendTurnResponse:
    return cs_pb2.SendTurnResponse(event=event)


async def body_of(response: Any, call: FakeCall, after: list[Any]) -> list[bytes]:
    frames = []
    async for frame in response.body_iterator:
        frames.append(frame)
        if frame == KEEPALIVE and after:
            for item in after:
                call.items.put_nowait(item)
            after.clear()
    return frames


async def test_a_call_refused_at_once_is_an_http_error_and_a_finished_one_204() -> None:
    refused = FakeCall()
    refused.items.put_nowait(
        rpc_error(grpc.StatusCode.NOT_FOUND, "turn not found", (("salon-error-reason", "TURN_NOT_FOUND"),))
    )
    response = await EventRelay(refused, keepalive_s=1).respond(open_wait_s=5)
    assert isinstance(response, JSONResponse) and response.status_code == 404
    assert json.loads(bytes(response.body))["error"]["reason"] == "TURN_NOT_FOUND"
    assert refused.cancelled
    ended = FakeCall()
    ended.items.put_nowait(grpc.aio.EOF)
    assert (await EventRelay(ended, keepalive_s=1).respond(open_wait_s=5)).status_code == 204


async def test_a_slow_turn_opens_its_stream_with_keepalives_and_a_late_failure_ends_it_as_an_event() -> None:
    call = FakeCall()
    response = await EventRelay(call, keepalive_s=0.01).respond(open_wait_s=0.01)
    assert isinstance(response, StreamingResponse)
    late = [
        response_of(turn_pb2.TurnEvent(seq=5, delta=turn_pb2.TokenDelta(text="x"))),
        rpc_error(grpc.StatusCode.UNAVAILABLE, "gone", (("salon-error-reason", "NATS_UNAVAILABLE"),)),
    ]
    frames = await body_of(response, call, late)
    assert frames[0] == PREAMBLE and KEEPALIVE in frames
    assert frames[-2].startswith(b"id: 5\nevent: delta\n")
    assert frames[-1].startswith(b"event: stream_error\n") and b"NATS_UNAVAILABLE" in frames[-1]
    assert call.cancelled
