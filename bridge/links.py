"""A link to the chat page carrying a fresh session's token: what ``salon serve --web``, ``salon demo`` and
``salon token`` print. It does what a frontend's backend does: create a session with the tenant's credentials,
ask for a session token for it, and hand the page the token (in the URL's fragment, which browsers never send to
a server, so the token stays out of access logs and Referer headers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration

from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import token_service_pb2 as tok_pb2
from salon.v1 import token_service_pb2_grpc as tok_grpc

PAGE_RIGHTS = (
    tok_pb2.TOKEN_RIGHT_SEND,
    tok_pb2.TOKEN_RIGHT_RESUME,
    tok_pb2.TOKEN_RIGHT_CANCEL,
    tok_pb2.TOKEN_RIGHT_READ,
    tok_pb2.TOKEN_RIGHT_TOOLS,
    tok_pb2.TOKEN_RIGHT_APPROVE,
)
"""Everything a chat page does with its own session."""


@dataclass(frozen=True, slots=True)
class PageLink:
    """A session, a token for it and the page's URL carrying the token."""

    session_id: str
    token: str
    expire_time: dt.datetime
    url: str


def page_url(web_url: str, token: str) -> str:
    """The chat page at ``web_url`` opened with ``token``."""
    return f"{web_url.rstrip('/')}/#token={token}"


async def mint_page_link(
    target: str,
    web_url: str,
    *,
    session_id: str = "",
    user: str = "",
    ttl_s: float = 3600.0,
    system_prompt: str = "",
    rights: Sequence[tok_pb2.TokenRight] = PAGE_RIGHTS,
    api_key: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> PageLink:
    """A token for ``session_id`` (a new session when empty) from the gateway at ``target``, authenticated by
    ``api_key`` (none: auth off, or a client certificate in ``credentials``)."""
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
    channel = (
        grpc.aio.secure_channel(target, credentials) if credentials is not None else grpc.aio.insecure_channel(target)
    )
    async with channel:
        if not session_id:
            conversation = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
            created = await conversation.CreateSession(
                cs_pb2.CreateSessionRequest(system_prompt=system_prompt, metadata={"salon.page": "link"}),
                metadata=metadata,
                timeout=30.0,
            )
            session_id = created.session.session_id
        issued = await tok_grpc.SessionTokenServiceStub(channel).IssueSessionToken(  # type: ignore[no-untyped-call]
            tok_pb2.IssueSessionTokenRequest(
                session_id=session_id, user=user, rights=list(rights), ttl=Duration(seconds=int(ttl_s))
            ),
            metadata=metadata,
            timeout=30.0,
        )
    return PageLink(
        session_id=session_id,
        token=issued.token,
        expire_time=issued.expire_time.ToDatetime(tzinfo=dt.UTC),
        url=page_url(web_url, issued.token),
    )
