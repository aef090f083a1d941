"""The web bridge over HTTP against a real engine with auth on: session tokens minted with a tenant's key, turns
streamed as SSE and resumed with Last-Event-ID, and every refusal a clear status with Salon's reason."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx2 as httpx
import pytest
from conftest import wait_for
from google.protobuf.duration_pb2 import Duration
from sec_support import TenantsFile, bearer, engine_config

from salon.bridge import SseDecoder, SseMessage
from salon.client import SalonClient
from salon.engine import Engine
from salon.engine.token_scope import OWNER_KEY
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc
from salon.v1 import session_pb2
from salon.v1 import token_service_pb2 as tok_pb2
from salon.v1 import token_service_pb2_grpc as tok_grpc

TOKENS = 12
SESSION_RIGHTS = (
    tok_pb2.TOKEN_RIGHT_SEND,
    tok_pb2.TOKEN_RIGHT_RESUME,
    tok_pb2.TOKEN_RIGHT_CANCEL,
    tok_pb2.TOKEN_RIGHT_READ,
    tok_pb2.TOKEN_RIGHT_TOOLS,
    tok_pb2.TOKEN_RIGHT_APPROVE,
)


@pytest.fixture(scope="module")
async def tenants(tmp_path_factory: pytest.TempPathFactory) -> TenantsFile:
    file = TenantsFile(tmp_path_factory.mktemp("tenants") / "tenants.toml")
    file.add_key("acme")
    file.add_key("beta")
    return file


@pytest.fixture(scope="module")
async def engine(
    nats_url: str, ray_session: None, tenants: TenantsFile, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    config = engine_config(
        nats_url,
        tmp_path_factory.mktemp("web"),
        tenants_file=str(tenants.path),
        web_port=0,
        scripted_tokens=TOKENS,
        scripted_token_delay_s=0.02,
        max_text_bytes=1024,
    )
    async with Engine(config) as running:
        yield running


@pytest.fixture
async def http(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.web_url, timeout=30.0) as client:
        yield client


class Tenant:
    """A tenant's backend: its API key and gRPC stubs on the engine."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.metadata = bearer(key)
        self.conversation = cs_grpc.ConversationServiceStub(channel)
        self.tokens = tok_grpc.SessionTokenServiceStub(channel)

    async def session(self, **fields: Any) -> str:
        created = await self.conversation.CreateSession(cs_pb2.CreateSessionRequest(**fields), metadata=self.metadata)
        return str(created.session.session_id)

    async def token(self, session_id: str = "", *rights: int, user: str = "", ttl_s: int = 0) -> str:
        issued = await self.tokens.IssueSessionToken(
            tok_pb2.IssueSessionTokenRequest(
                session_id=session_id, user=user, rights=rights or SESSION_RIGHTS, ttl=Duration(seconds=ttl_s)
            ),
            metadata=self.metadata,
        )
        return str(issued.token)


@pytest.fixture
async def channel(engine: Engine) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(engine.target) as opened:
        yield opened


@pytest.fixture
def acme(channel: grpc.aio.Channel, tenants: TenantsFile) -> Tenant:
    return Tenant(channel, tenants.keys["acme"][0])


@pytest.fixture
def beta(channel: grpc.aio.Channel, tenants: TenantsFile) -> Tenant:
    return Tenant(channel, tenants.keys["beta"][0])


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def read_sse(response: httpx.Response) -> list[SseMessage]:
    decoder = SseDecoder()
    return [message async for chunk in response.aiter_bytes() for message in decoder.feed(chunk)]


async def send_turn(http: httpx.AsyncClient, session_id: str, token: str, **body: Any) -> list[SseMessage]:
    async with http.stream("POST", f"/v1/sessions/{session_id}/turns", json=body, headers=auth(token)) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return await read_sse(response)


def refusal(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["error"]["code"] == response.status_code
    return response.status_code, body["error"]["reason"]


async def test_a_turn_streams_as_server_sent_events_and_resumes_after_any_event(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    session = await acme.session()
    token = await acme.token(session)
    messages = await send_turn(http, session, token, text="alpha beta gamma", idempotencyKey="turn-1")
    events = [m.json() for m in messages]
    # id is the per-turn sequence number, event the kind, data the TurnEvent in protobuf's JSON mapping.
    assert [m.id for m in messages] == [str(n) for n in range(1, len(messages) + 1)]
    assert [e["seq"] for e in events] == [m.id for m in messages]
    kinds = [m.event for m in messages]
    assert kinds[0] == "accepted" and kinds[-2:] == ["usage", "completed"]
    assert set(kinds[1:-2]) == {"delta"} and len(kinds) - 3 <= TOKENS, "tokens may travel several to an event"
    assert {e["turnId"] for e in events} == {"turn-1"}
    assert "".join(e["delta"]["text"] for e in events if "delta" in e) == "alpha beta gamma " * 4

    resume = f"/v1/sessions/{session}/turns/turn-1/events"
    async with http.stream("GET", resume, headers={**auth(token), "last-event-id": "3"}) as response:
        rest = await read_sse(response)
    assert [m.data for m in rest] == [m.data for m in messages[3:]]
    # EventSource cannot set headers: the first connection may say where to start, and carry the token, in the URL.
    async with http.stream("GET", f"{resume}?after={len(messages) - 1}&access_token={token}") as response:
        assert [m.event for m in await read_sse(response)] == ["completed"]
    # Nothing after the last event: 204, which also tells EventSource to stop reconnecting.
    done = await http.get(resume, headers={**auth(token), "last-event-id": str(len(messages))})
    assert done.status_code == 204


async def test_a_dropped_stream_leaves_the_turn_running_and_resumable(http: httpx.AsyncClient, acme: Tenant) -> None:
    session = await acme.session()
    token = await acme.token(session)
    async with http.stream(
        "POST",
        f"/v1/sessions/{session}/turns",
        json={"text": "one two", "idempotencyKey": "dropped"},
        headers=auth(token),
    ) as response:
        decoder = SseDecoder()
        async for chunk in response.aiter_bytes():
            if any(m.event == "delta" for m in decoder.feed(chunk)):
                break  # the client goes away mid-turn
    async with http.stream("GET", f"/v1/sessions/{session}/turns/dropped/events", headers=auth(token)) as resumed:
        events = await read_sse(resumed)
    assert [m.id for m in events] == [str(n) for n in range(1, len(events) + 1)]
    assert events[-1].event == "completed"
    assert "".join(m.json()["delta"]["text"] for m in events if m.event == "delta") == "one two " * (TOKENS // 2)


async def test_stop_cancels_the_turn_upstream(http: httpx.AsyncClient, acme: Tenant) -> None:
    session = await acme.session()
    token = await acme.token(session)
    seen: list[SseMessage] = []
    async with http.stream(
        "POST", f"/v1/sessions/{session}/turns", json={"text": "slow", "idempotencyKey": "stopped"}, headers=auth(token)
    ) as response:
        decoder = SseDecoder()
        async for chunk in response.aiter_bytes():
            for message in decoder.feed(chunk):
                seen.append(message)
                if message.event == "delta" and sum(m.event == "delta" for m in seen) == 1:
                    cancel = await http.post(f"/v1/sessions/{session}/turns/stopped/cancel", headers=auth(token))
                    assert (cancel.status_code, cancel.json()) == (200, {})
    assert seen[-1].event == "cancelled"
    shown = "".join(m.json()["delta"]["text"] for m in seen if m.event == "delta")
    assert len(shown) < len("slow " * TOKENS), "stopped before the end of the answer"


async def test_a_token_works_only_for_its_own_session_and_rights(
    http: httpx.AsyncClient, acme: Tenant, beta: Tenant
) -> None:
    mine, other = await acme.session(), await acme.session()
    token = await acme.token(mine, tok_pb2.TOKEN_RIGHT_SEND)
    for method, path in (
        ("POST", f"/v1/sessions/{other}/turns"),
        ("GET", f"/v1/sessions/{other}/history"),
        ("GET", f"/v1/sessions/{other}"),
        ("POST", f"/v1/sessions/{other}/turns/t/cancel"),
    ):
        response = await http.request(
            method, path, json={"text": "hi"} if path.endswith("/turns") else None, headers=auth(token)
        )
        assert refusal(response) == (403, "TOKEN_SESSION_MISMATCH"), path
    response = await http.post(f"/v1/sessions/{mine}/turns/t/cancel", headers=auth(token))
    assert refusal(response) == (403, "TOKEN_RIGHT_MISSING")
    # Another tenant cannot even get a token for it: to beta, acme's session does not exist.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await beta.token(mine)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_credentials_the_bridge_refuses(http: httpx.AsyncClient, acme: Tenant, tenants: TenantsFile) -> None:
    session = await acme.session()
    path = f"/v1/sessions/{session}/turns"
    body = {"text": "hi"}
    missing = await http.post(path, json=body)
    assert refusal(missing) == (401, "TOKEN_REQUIRED")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    # The tenant's API key works on gRPC, and is refused here before it goes anywhere.
    api_key = await http.post(path, json=body, headers=auth(tenants.keys["acme"][0]))
    assert refusal(api_key) == (401, "API_KEY_REFUSED")
    assert refusal(await http.post(path, json=body, headers={"authorization": "Basic abc"})) == (401, "TOKEN_REQUIRED")
    # A token is taken from the URL only where a header cannot be set: event streams.
    token = await acme.token(session)
    assert refusal(await http.post(f"{path}?access_token={token}", json=body)) == (401, "TOKEN_REQUIRED")
    # Tampered: the claims rewritten to another session, the signature kept.
    prefix, key_id, claims, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    decoded["sid"] = await acme.session()
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    tampered = await http.post(path, json=body, headers=auth(f"{prefix}.{key_id}.{forged}.{signature}"))
    assert refusal(tampered) == (401, "TOKEN_INVALID")


async def test_an_expired_token_is_refused_as_expired(http: httpx.AsyncClient, acme: Tenant) -> None:
    session = await acme.session()
    token = await acme.token(session, ttl_s=1)
    path = f"/v1/sessions/{session}/history"

    async def expired() -> bool:
        response = await http.get(path, headers=auth(token))
        return response.status_code == 401 and response.json()["error"]["reason"] == "TOKEN_EXPIRED"

    assert (await http.get(path, headers=auth(token))).status_code in (200, 401)
    await wait_for(expired, timeout_s=10, what="the token to expire")


async def test_a_user_token_creates_sessions_and_gets_a_token_for_each(
    http: httpx.AsyncClient, acme: Tenant, channel: grpc.aio.Channel
) -> None:
    user_token = await acme.token(
        "", tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS, tok_pb2.TOKEN_RIGHT_SEND, tok_pb2.TOKEN_RIGHT_READ, user="alice"
    )
    created = await http.post("/v1/sessions", json={"systemPrompt": "be brief"}, headers=auth(user_token))
    assert created.status_code == 201, created.text
    body = created.json()
    session = body["session"]["sessionId"]
    assert body["session"]["metadata"] == {OWNER_KEY: "alice"}
    assert body["sessionId"] == session and body["rights"] == ["TOKEN_RIGHT_SEND", "TOKEN_RIGHT_READ"]
    events = await send_turn(http, session, body["token"], text="hello")
    assert events[-1].event == "completed"
    # The user token itself only creates; it does not act on sessions.
    assert refusal(await http.post(f"/v1/sessions/{session}/turns", json={"text": "x"}, headers=auth(user_token))) == (
        403,
        "TOKEN_SCOPE",
    )
    # The backend chooses models and tools, not the page.
    chosen = await http.post("/v1/sessions", json={"model": {"provider": "anthropic"}}, headers=auth(user_token))
    assert refusal(chosen) == (403, "TOKEN_FIELD_NOT_ALLOWED")
    # Another user's token cannot get a token for alice's session.
    bob = await acme.token("", tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS, tok_pb2.TOKEN_RIGHT_SEND, user="bob")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tok_grpc.SessionTokenServiceStub(channel).IssueSessionToken(
            tok_pb2.IssueSessionTokenRequest(session_id=session), metadata=bearer(bob)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_token_on_grpc_directly_is_held_to_the_same_scope(acme: Tenant, channel: grpc.aio.Channel) -> None:
    session = await acme.session()
    metadata = bearer(await acme.token(session))
    conversation = cs_grpc.ConversationServiceStub(channel)
    events = [
        r async for r in conversation.SendTurn(cs_pb2.SendTurnRequest(session_id=session, text="x"), metadata=metadata)
    ]
    assert events[-1].event.HasField("completed")
    for call in (
        conversation.ListSessions(cs_pb2.ListSessionsRequest(), metadata=metadata),
        ks_grpc.KnowledgeServiceStub(channel).Search(ks_pb2.SearchRequest(text="x"), metadata=metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert dict(caught.value.trailing_metadata())["salon-error-reason"] == "TOKEN_SCOPE"
    # Minting needs the tenant's own credentials.
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await tok_grpc.SessionTokenServiceStub(channel).IssueSessionToken(
            tok_pb2.IssueSessionTokenRequest(session_id=session)
        )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


SECRET_FIELD = "zzSecretFieldName"


@pytest.mark.parametrize(
    ("content", "content_type", "status", "reason"),
    [
        (b"{not json", "application/json", 400, "MALFORMED_JSON"),
        (b"[1, 2]", "application/json", 400, "MALFORMED_REQUEST"),
        (json.dumps({SECRET_FIELD: 1}).encode(), "application/json", 400, "MALFORMED_REQUEST"),
        (json.dumps({"text": 5}).encode(), "application/json", 400, "MALFORMED_REQUEST"),
        (b'{"text": "\\ud800"}', "application/json", 400, "MALFORMED_REQUEST"),
        (b"[" * 100_000, "application/json", 400, "MALFORMED_JSON"),
        (b'{"text": "hi"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (json.dumps({"text": "x" * (2 << 20)}).encode(), "application/json", 413, "BODY_TOO_LARGE"),
        (json.dumps({"text": SECRET_FIELD * 200}).encode(), "application/json", 400, "TEXT_TOO_LARGE"),
        (json.dumps({"text": "  "}).encode(), "application/json", 400, "EMPTY_TEXT"),
        (json.dumps({"text": "hi", "sessionId": "elsewhere"}).encode(), "application/json", 400, "SESSION_MISMATCH"),
        (
            json.dumps({"text": "hi", "idempotencyKey": "bad key!"}).encode(),
            "application/json",
            400,
            "INVALID_IDEMPOTENCY_KEY",
        ),
    ],
)
async def test_bad_input_gets_a_status_and_a_reason_and_is_never_echoed(  # noqa: PLR0917
    http: httpx.AsyncClient, acme: Tenant, content: bytes, content_type: str, status: int, reason: str
) -> None:
    session = await acme.session()
    token = await acme.token(session)
    response = await http.post(
        f"/v1/sessions/{session}/turns", content=content, headers={**auth(token), "content-type": content_type}
    )
    assert refusal(response) == (status, reason)
    assert SECRET_FIELD not in response.text


async def test_paths_methods_and_resume_positions_that_do_not_exist(http: httpx.AsyncClient, acme: Tenant) -> None:
    session = await acme.session()
    token = await acme.token(session)
    assert refusal(await http.get("/v1/nowhere", headers=auth(token))) == (404, "NOT_FOUND")
    assert refusal(await http.get(f"/v1/sessions/{session}/turns", headers=auth(token))) == (405, "METHOD_NOT_ALLOWED")
    events = f"/v1/sessions/{session}/turns/never-sent/events"
    assert refusal(await http.get(events, headers=auth(token))) == (404, "TURN_NOT_FOUND")
    bad_position = await http.get(events, headers={**auth(token), "last-event-id": "-1"})
    assert refusal(bad_position) == (400, "BAD_LAST_EVENT_ID")


async def test_tool_results_and_approvals_reach_the_engine(http: httpx.AsyncClient, acme: Tenant) -> None:
    session = await acme.session()
    token = await acme.token(session)
    turn = f"/v1/sessions/{session}/turns/t-1"
    result = await http.post(f"{turn}/tool-results", json={"callId": "c-1", "result": "42"}, headers=auth(token))
    decision = await http.post(
        f"{turn}/approvals", json={"callId": "c-1", "verdict": "APPROVAL_VERDICT_APPROVE"}, headers=auth(token)
    )
    # No such call: the engine's answer, relayed with its reason.
    assert refusal(result)[0] == 404
    assert refusal(decision)[0] == 404


async def test_the_page_is_served_with_a_strict_content_security_policy(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and 'src="app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = await http.get("/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_a_page_answers_a_tool_call_and_the_turn_goes_on(http: httpx.AsyncClient, acme: Tenant) -> None:
    tool = session_pb2.Tool(name="lookup", description="Look an order up.")
    session = await acme.session(tools=session_pb2.ToolSet(tools=[tool]))
    token = await acme.token(session)
    body = {"text": '$CALL lookup {"order": "A-1"}\nIt is $RESULTS', "idempotencyKey": "tool-turn"}
    seen: list[SseMessage] = []
    async with http.stream("POST", f"/v1/sessions/{session}/turns", json=body, headers=auth(token)) as response:
        decoder = SseDecoder()
        async for chunk in response.aiter_bytes():
            for message in decoder.feed(chunk):
                seen.append(message)
                if message.event == "tool_call":
                    call = message.json()["toolCall"]
                    assert (call["tool"], json.loads(call["argumentsJson"])) == ("lookup", {"order": "A-1"})
                    answer = {"callId": call["callId"], "result": "shipped"}
                    path = f"/v1/sessions/{session}/turns/tool-turn/tool-results"
                    submitted = await http.post(path, json=answer, headers=auth(token))
                    assert (submitted.status_code, submitted.json()) == (200, {"duplicate": False})
                    again = await http.post(path, json=answer, headers=auth(token))
                    # Counts once: a duplicate while the turn goes on; once it has ended, the call is not found.
                    assert again.status_code == 404 or again.json() == {"duplicate": True}, again.status_code
    kinds = [m.event for m in seen]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("completed")
    assert kinds.count("tool_result") == 1, "the repeated answer is not taken again"
    assert "shipped" in "".join(m.json()["delta"]["text"] for m in seen if m.event == "delta")


async def test_a_python_backend_mints_with_the_client_package(
    http: httpx.AsyncClient, engine: Engine, tenants: TenantsFile
) -> None:
    async with SalonClient(engine.target, api_key=tenants.keys["acme"][0]) as backend:
        session = await backend.create_session()
        issued = await backend.issue_session_token(session.id, user="alice", rights=["send", "read"], ttl_s=60)
        with pytest.raises(ValueError):
            await backend.issue_session_token(session.id, rights=["everything"])
    assert issued.session_id == session.id
    assert list(issued.rights) == [tok_pb2.TOKEN_RIGHT_SEND, tok_pb2.TOKEN_RIGHT_READ]
    events = await send_turn(http, session.id, issued.token, text="hello")
    assert events[-1].event == "completed"
