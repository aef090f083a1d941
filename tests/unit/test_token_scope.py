"""What a session token may do (engine.token_scope), and who may have one (engine.token_service)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from salon.bridge.credentials import TOKEN_PREFIX
from salon.engine.session_tokens import PREFIX, Right, SessionTokens, TokenClaims
from salon.engine.tenants import Identity
from salon.engine.token_scope import METHOD_RIGHTS, OWNER_KEY, apply_scope
from salon.engine.token_service import TokenIssuer, rights_to_proto
from salon.storage.errors import InvalidArgument, NotFound, PermissionDenied, SalonError
from salon.storage.reasons import Reason
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import session_pb2
from salon.v1 import token_service_pb2 as tok_pb2

CS = "/salon.v1.ConversationService/"
NOW = 1_800_000_000


def claims(session_id: str = "s1", *rights: Right, user: str = "alice", expires_at: int = NOW + 600) -> TokenClaims:
    return TokenClaims(
        tenant_id="acme",
        session_id=session_id,
        user=user,
        rights=frozenset(rights or (Right.SEND, Right.RESUME, Right.CANCEL, Right.READ)),
        issued_at=NOW,
        expires_at=expires_at,
        token_id="t1",
        key_id="k1",
    )


def refused(error: type[SalonError], call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(error) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(caught.value.reason)


def test_the_bridge_recognises_exactly_the_engines_tokens() -> None:
    assert TOKEN_PREFIX == PREFIX + "."


def test_a_session_token_acts_on_its_session_with_its_rights() -> None:
    token = claims("s1")
    apply_scope(token, CS + "SendTurn", cs_pb2.SendTurnRequest(session_id="s1", text="hi"))
    apply_scope(token, CS + "ResumeTurn", cs_pb2.ResumeTurnRequest(session_id="s1", turn_id="t"))
    apply_scope(token, CS + "GetHistory", cs_pb2.GetHistoryRequest(session_id="s1"))
    mismatch = refused(PermissionDenied, apply_scope, token, CS + "SendTurn", cs_pb2.SendTurnRequest(session_id="s2"))
    assert mismatch == Reason.TOKEN_SESSION_MISMATCH
    missing = refused(
        PermissionDenied,
        apply_scope,
        token,
        CS + "SubmitToolResult",
        cs_pb2.SubmitToolResultRequest(session_id="s1", turn_id="t", call_id="c", result="x"),
    )
    assert missing == Reason.TOKEN_RIGHT_MISSING
    approve = claims("s1", Right.APPROVE)
    apply_scope(approve, CS + "DecideApproval", cs_pb2.DecideApprovalRequest(session_id="s1"))
    assert (
        refused(PermissionDenied, apply_scope, approve, CS + "CancelTurn", cs_pb2.CancelTurnRequest(session_id="s1"))
        == Reason.TOKEN_RIGHT_MISSING
    )


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        (CS + "ListSessions", cs_pb2.ListSessionsRequest()),
        (CS + "DeleteSession", cs_pb2.DeleteSessionRequest(session_id="s1")),
        ("/salon.v1.KnowledgeService/Search", ks_pb2.SearchRequest(text="x")),
        ("/salon.v1.AdminService/GetUsage", None),
        ("/salon.v1.AdminService/EraseUser", None),
        ("/salon.v1.KnowledgeService/SearchMemory", ks_pb2.SearchMemoryRequest(text="x", session_id="s1")),
    ],
)
def test_other_methods_are_out_of_a_tokens_scope(method: str, request_message: object) -> None:
    assert refused(PermissionDenied, apply_scope, claims("s1"), method, request_message) == Reason.TOKEN_SCOPE


def test_a_stream_of_requests_cannot_be_checked_so_it_is_refused() -> None:
    reason = refused(PermissionDenied, apply_scope, claims("s1"), CS + "Converse", None, streaming=True)
    assert reason == Reason.TOKEN_SCOPE


def test_a_token_cannot_give_a_turn_tools_of_its_own() -> None:
    request = cs_pb2.SendTurnRequest(session_id="s1", text="hi")
    request.tools.SetInParent()
    reason = refused(PermissionDenied, apply_scope, claims("s1"), CS + "SendTurn", request)
    assert reason == Reason.TOKEN_FIELD_NOT_ALLOWED


def test_a_user_token_creates_sessions_labelled_with_its_user_and_nothing_else() -> None:
    user = claims("", Right.CREATE, Right.SEND)
    request = cs_pb2.CreateSessionRequest(system_prompt="be brief", metadata={OWNER_KEY: "mallory", "app": "x"})
    apply_scope(user, CS + "CreateSession", request)
    assert dict(request.metadata) == {OWNER_KEY: "alice", "app": "x"}
    for field in ("session_id", "model", "user_id"):
        chosen = cs_pb2.CreateSessionRequest()
        if field == "session_id":
            chosen.session_id = "mine"
        elif field == "user_id":
            chosen.user_id = "bob"  # whose memory the session could read: the backend's choice
        else:
            chosen.model.provider = "anthropic"
        assert (
            refused(PermissionDenied, apply_scope, user, CS + "CreateSession", chosen) == Reason.TOKEN_FIELD_NOT_ALLOWED
        )
    send = cs_pb2.SendTurnRequest(session_id="s1", text="hi")
    assert refused(PermissionDenied, apply_scope, user, CS + "SendTurn", send) == Reason.TOKEN_SCOPE


def test_a_session_token_cannot_create_sessions() -> None:
    reason = refused(PermissionDenied, apply_scope, claims("s1"), CS + "CreateSession", cs_pb2.CreateSessionRequest())
    assert reason == Reason.TOKEN_RIGHT_MISSING


def test_every_right_is_needed_by_some_method() -> None:
    assert set(METHOD_RIGHTS.values()) == set(Right)


# The issuer: who may have a token, for what and for how long.


class Sessions:
    """Sessions by (tenant, id), as the registry would answer."""

    def __init__(self, *sessions: tuple[str, session_pb2.Session]) -> None:
        self._sessions = {(tenant, s.session_id): s for tenant, s in sessions}

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        try:
            return self._sessions[(tenant_id, session_id)]
        except KeyError:
            raise NotFound("session not found", reason=Reason.SESSION_NOT_FOUND) from None


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[TokenIssuer, SessionTokens]:
    tokens = SessionTokens(tmp_path / "keys.json", max_ttl_s=3600, clock=lambda: NOW)
    tokens.open()
    sessions = Sessions(
        ("acme", session_pb2.Session(session_id="s1")),
        ("acme", session_pb2.Session(session_id="owned", metadata={OWNER_KEY: "alice"})),
        ("other", session_pb2.Session(session_id="theirs")),
    )
    return TokenIssuer(tokens, sessions.get, default_ttl_s=900, clock=lambda: NOW), tokens


KEY = Identity("acme", credential="key:0123456789ab")


def request(session_id: str = "", *rights: int, user: str = "", ttl_s: int = 0) -> tok_pb2.IssueSessionTokenRequest:
    return tok_pb2.IssueSessionTokenRequest(
        session_id=session_id, user=user, rights=rights, ttl=Duration(seconds=ttl_s)
    )


async def test_an_api_key_gets_a_token_for_one_of_its_sessions_with_default_rights(issuer) -> None:  # type: ignore[no-untyped-def]
    issue, tokens = issuer
    response = await issue.issue(KEY, request("s1"))
    verified = tokens.verify(response.token)
    assert (verified.tenant_id, verified.session_id) == ("acme", "s1")
    assert verified.rights == {Right.SEND, Right.RESUME, Right.CANCEL, Right.READ}
    assert verified.expires_at == NOW + 900 == response.expire_time.seconds
    assert list(response.rights) == rights_to_proto(verified.rights)
    with pytest.raises(NotFound):  # another tenant's session: as if it did not exist
        await issue.issue(KEY, request("theirs"))


async def test_ttl_and_rights_are_checked(issuer) -> None:  # type: ignore[no-untyped-def]
    issue, _ = issuer
    with pytest.raises(InvalidArgument) as too_long:
        await issue.issue(KEY, request("s1", ttl_s=3601))
    assert too_long.value.reason == Reason.TOKEN_TTL_TOO_LONG
    with pytest.raises(InvalidArgument) as unspecified:
        await issue.issue(KEY, request("s1", tok_pb2.TOKEN_RIGHT_UNSPECIFIED))
    assert unspecified.value.reason == Reason.BAD_TOKEN_RIGHTS
    with pytest.raises(InvalidArgument):  # create goes with user tokens only
        await issue.issue(KEY, request("s1", tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS))
    with pytest.raises(InvalidArgument):  # a user token needs a user
        await issue.issue(KEY, request("", tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS))


async def test_a_user_token_hands_on_no_more_than_it_holds_for_sessions_it_created(issuer) -> None:  # type: ignore[no-untyped-def]
    issue, tokens = issuer
    user = await issue.issue(
        KEY, request("", tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS, tok_pb2.TOKEN_RIGHT_SEND, user="alice", ttl_s=300)
    )
    holder = Identity("acme", credential="token:x", token=tokens.verify(user.token))
    session = tokens.verify((await issue.issue(holder, request("owned"))).token)
    assert session.rights == {Right.SEND}
    assert session.user == "alice"
    assert session.expires_at == NOW + 300  # never past the user token's own expiry
    with pytest.raises(InvalidArgument):
        await issue.issue(holder, request("owned", tok_pb2.TOKEN_RIGHT_READ))
    for not_mine in ("s1", "theirs", "missing"):
        with pytest.raises(NotFound):
            await issue.issue(holder, request(not_mine))
