"""The bridge's endpoints: each one reads the HTTP request, makes one (or two) calls to the gateway with the
caller's session token, and answers JSON or an event stream. No rules live here: the gateway decides.

| method and path | gRPC call | answer |
| --- | --- | --- |
| ``POST /v1/sessions`` | CreateSession + IssueSessionToken (a user token) | ``{session, token, expireTime, …}`` |
| ``GET /v1/sessions/{session}`` | GetSession | the session |
| ``GET /v1/sessions/{session}/history`` | GetHistory (``?pageSize=&pageToken=``) | ``{turns, nextPageToken}`` |
| ``POST /v1/sessions/{session}/turns`` | SendTurn | the turn's events (SSE) |
| ``GET /v1/sessions/{session}/turns/{turn}/events`` | ResumeTurn after ``Last-Event-ID`` | the rest (SSE) |
| ``POST /v1/sessions/{session}/turns/{turn}/cancel`` | CancelTurn | ``{}`` |
| ``POST /v1/sessions/{session}/turns/{turn}/tool-results`` | SubmitToolResult | ``{duplicate}`` |
| ``POST /v1/sessions/{session}/turns/{turn}/approvals`` | DecideApproval | ``{duplicate, verdict}`` |
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from salon.bridge.credentials import session_token
from salon.bridge.errors import BridgeError, bad_request, from_rpc_error
from salon.bridge.requests import after_seq, read_message
from salon.bridge.sse import to_json
from salon.bridge.streams import EventRelay
from salon.bridge.upstream import Upstream, call_metadata
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import token_service_pb2 as tok_pb2

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Limits:
    """How the endpoints bound their work."""

    max_body_bytes: int = 1024 * 1024
    call_timeout_s: float = 30.0
    open_wait_s: float = 2.0
    keepalive_s: float = 15.0


def error_response(error: BridgeError) -> JSONResponse:
    """``error`` as the bridge answers it."""
    return JSONResponse(error.body(), status_code=error.http_status, headers=error.headers())


def handled(endpoint: Endpoint) -> Endpoint:
    """Answer the bridge's and the engine's refusals as JSON errors."""

    @functools.wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BridgeError as error:
            return error_response(error)
        except grpc.aio.AioRpcError as exc:
            return error_response(from_rpc_error(exc))

    return run


def _path_session(request: Request, message: Any) -> str:
    """The session of the path, which a body may repeat but not contradict."""
    session_id = str(request.path_params["session_id"])
    if message.session_id and message.session_id != session_id:
        raise bad_request("SESSION_MISMATCH", "the body names another session than the path")
    message.session_id = session_id
    return session_id


def _path_turn(request: Request, message: Any) -> None:
    _path_session(request, message)
    turn_id = str(request.path_params["turn_id"])
    if message.turn_id and message.turn_id != turn_id:
        raise bad_request("TURN_MISMATCH", "the body names another turn than the path")
    message.turn_id = turn_id


class Routes:
    """The endpoints over one :class:`Upstream`."""

    def __init__(self, upstream: Upstream, limits: Limits) -> None:
        self._up = upstream
        self._limits = limits

    def endpoints(self) -> list[tuple[str, str, Endpoint]]:
        """(method, path under ``/v1``, endpoint) of every API endpoint."""
        session = "/sessions/{session_id}"
        turn = session + "/turns/{turn_id}"
        return [
            ("POST", "/sessions", handled(self.create_session)),
            ("GET", session, handled(self.get_session)),
            ("GET", session + "/history", handled(self.history)),
            ("POST", session + "/turns", handled(self.send_turn)),
            ("GET", turn + "/events", handled(self.resume_turn)),
            ("POST", turn + "/cancel", handled(self.cancel_turn)),
            ("POST", turn + "/tool-results", handled(self.submit_tool_result)),
            ("POST", turn + "/approvals", handled(self.decide_approval)),
        ]

    async def health(self, request: Request) -> Response:
        """Liveness of the bridge process (the gateway's health is its own gRPC health service)."""
        return JSONResponse({"status": "ok"})

    async def create_session(self, request: Request) -> Response:
        """A new session for a user token, and a session token for it."""
        token = session_token(request)
        message = await read_message(request, cs_pb2.CreateSessionRequest(), self._limits.max_body_bytes)
        metadata = call_metadata(token, request)
        timeout = self._limits.call_timeout_s
        created = await self._up.conversation.CreateSession(message, metadata=metadata, timeout=timeout)
        issued = await self._up.tokens.IssueSessionToken(
            tok_pb2.IssueSessionTokenRequest(session_id=created.session.session_id), metadata=metadata, timeout=timeout
        )
        return JSONResponse({"session": to_json(created.session), **to_json(issued)}, status_code=201)

    async def get_session(self, request: Request) -> Response:
        """The session."""
        token = session_token(request)
        message = cs_pb2.GetSessionRequest()
        _path_session(request, message)
        response = await self._up.conversation.GetSession(
            message, metadata=call_metadata(token, request), timeout=self._limits.call_timeout_s
        )
        return JSONResponse(to_json(response.session))

    async def history(self, request: Request) -> Response:
        """One page of the session's transcript, oldest first."""
        token = session_token(request)
        size = request.query_params.get("pageSize", "0")
        if not size.isdigit() or len(size) > 6:
            raise bad_request("BAD_PAGE_SIZE", "pageSize must be a whole number")
        message = cs_pb2.GetHistoryRequest(page_size=int(size), page_token=request.query_params.get("pageToken", ""))
        _path_session(request, message)
        response = await self._up.conversation.GetHistory(
            message, metadata=call_metadata(token, request), timeout=self._limits.call_timeout_s
        )
        return JSONResponse(to_json(response))

    async def send_turn(self, request: Request) -> Response:
        """Send a turn; its events stream back as SSE."""
        token = session_token(request)
        message = await read_message(request, cs_pb2.SendTurnRequest(), self._limits.max_body_bytes)
        _path_session(request, message)
        call = self._up.conversation.SendTurn(message, metadata=call_metadata(token, request))
        return await EventRelay(call, keepalive_s=self._limits.keepalive_s).respond(self._limits.open_wait_s)

    async def resume_turn(self, request: Request) -> Response:
        """A turn's events after ``Last-Event-ID`` (or ``?after=``), as SSE; 204 when there are none left."""
        token = session_token(request, allow_query=True)
        message = cs_pb2.ResumeTurnRequest(after_seq=after_seq(request))
        _path_turn(request, message)
        call = self._up.conversation.ResumeTurn(message, metadata=call_metadata(token, request))
        return await EventRelay(call, keepalive_s=self._limits.keepalive_s).respond(self._limits.open_wait_s)

    async def cancel_turn(self, request: Request) -> Response:
        """Cancel a running or queued turn (its stream then ends with a ``cancelled`` event)."""
        token = session_token(request)
        message = await read_message(request, cs_pb2.CancelTurnRequest(), self._limits.max_body_bytes)
        _path_turn(request, message)
        await self._up.conversation.CancelTurn(
            message, metadata=call_metadata(token, request), timeout=self._limits.call_timeout_s
        )
        return JSONResponse({})

    async def submit_tool_result(self, request: Request) -> Response:
        """Answer a tool call the page runs: ``{"callId": …, "result": …}`` or ``{"callId": …, "error": …}``."""
        token = session_token(request)
        message = await read_message(request, cs_pb2.SubmitToolResultRequest(), self._limits.max_body_bytes)
        _path_turn(request, message)
        response = await self._up.conversation.SubmitToolResult(
            message, metadata=call_metadata(token, request), timeout=self._limits.call_timeout_s
        )
        return JSONResponse({"duplicate": response.duplicate})

    async def decide_approval(self, request: Request) -> Response:
        """Approve or reject a tool call: ``{"callId": …, "verdict": "APPROVAL_VERDICT_APPROVE", "reason": …}``."""
        token = session_token(request)
        message = await read_message(request, cs_pb2.DecideApprovalRequest(), self._limits.max_body_bytes)
        _path_turn(request, message)
        response = await self._up.conversation.DecideApproval(
            message, metadata=call_metadata(token, request), timeout=self._limits.call_timeout_s
        )
        return JSONResponse(to_json(response) | {"duplicate": response.duplicate})
