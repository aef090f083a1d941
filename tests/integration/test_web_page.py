"""The chat page (clients/web) in headless Chromium against a real engine, its bridge and the scripted model.

The scripted model answers with the words of the message, one token each, 50 ms apart, so streaming is slow
enough to watch and every token is known: the answer on the page must be exactly the message's words, once
each, in order, whatever happened to the connection.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import grpc
import pytest
from browser_support import CutFactory, PageFactory, browser, network_cut, open_page  # noqa: F401  (fixtures)
from conftest import release_events_stream, wait_for
from playwright.async_api import Page, expect

from salon.bridge import mint_page_link
from salon.client import Document, SalonClient
from salon.engine import Config, Engine
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

TOKENS = 40
TOKEN_DELAY_S = 0.05
_namespaces = itertools.count()


@pytest.fixture(scope="module")
async def web_engine(
    nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    """An engine with its web bridge, a slow scripted model and one document in its knowledge base."""
    engine = Engine(
        Config(
            data_dir=str(tmp_path_factory.mktemp("web")),
            grpc_port=0,
            web_port=0,
            nats_url=nats_url,
            namespace=f"web{next(_namespaces)}",
            num_hosts=1,
            num_shards=2,
            model_provider="scripted",
            scripted_tokens=TOKENS,
            scripted_token_delay_s=TOKEN_DELAY_S,
            embedding_model="hash",
            long_term_memory=False,
            retrieval_min_score=0.0,
            shutdown_grace_s=2.0,
        )
    )
    await engine.start()
    async with SalonClient(engine.target) as client:
        document = Document("lisbon-guide", "Lisbon in May: pack layers and good shoes.", title="Lisbon guide")
        assert [p.result.code async for p in client.ingest([document]) if p.result is not None] == [0]
    yield engine
    await engine.close()
    await release_events_stream(nats_url, engine.config.namespace)


def message_words(first: str = "Lisbon") -> list[str]:
    """A message of exactly TOKENS words (so the scripted answer is each word once)."""
    return [first, "[1]", *(f"w{i:02d}" for i in range(2, TOKENS))]


def answer_of(words: list[str]) -> str:
    return "".join(f"{w} " for w in words)


async def history(engine: Engine, session_id: str) -> list[turn_pb2.TurnRecord]:
    async with grpc.aio.insecure_channel(engine.target) as channel:
        response = await cs_grpc.ConversationServiceStub(channel).GetHistory(
            cs_pb2.GetHistoryRequest(session_id=session_id)
        )
    return list(response.turns)


async def last_seq(engine: Engine, session_id: str, turn_id: str) -> int:
    """The sequence number of a finished turn's terminal event, as the engine replays it."""
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        request = cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=turn_id)
        return [r.event.seq async for r in stub.ResumeTurn(request)][-1]


async def ready(page: Page) -> None:
    await expect(page.locator("#message")).to_be_enabled()
    await expect(page.locator("#connection")).to_have_text("Connected")


async def send(page: Page, text: str) -> None:
    await page.locator("#message").fill(text)
    await page.locator("#message").press("Enter")


def last_turn(page: Page) -> tuple[object, object]:
    turn = page.locator(".turn").last
    return turn, turn.locator(".answer")


async def test_tokens_stream_in_with_numbered_citations_and_usage(web_engine: Engine, open_page: PageFactory) -> None:
    link = await mint_page_link(web_engine.target, web_engine.web_url)
    page = await open_page(link.url)
    await ready(page)
    assert "#token=" not in page.url, "the token must leave the address bar"
    # Record the answer's length at every change, in the page, to see it grow token by token.
    await page.evaluate(
        """() => {
            window.lengths = [];
            new MutationObserver(() => {
                const answer = document.querySelector('.turn:last-child .answer');
                if (answer) window.lengths.push(answer.textContent.length);
            }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    words = message_words()
    await send(page, " ".join(words))
    turn, answer = last_turn(page)
    await expect(turn).to_have_attribute("data-state", "streaming")
    await expect(turn).to_have_attribute("data-state", "completed", timeout=30_000)

    await expect(answer).to_have_text(answer_of(words))
    lengths: list[int] = await page.evaluate("window.lengths")
    growth = sorted(set(lengths))
    assert len(growth) >= TOKENS // 2, f"the answer did not grow token by token: {growth}"
    assert lengths == sorted(lengths), "the answer only ever grows"
    # The retrieved passage is listed as source [1], and the marker [1] in the answer links to it.
    sources = turn.locator(".source-list li")
    await expect(sources).to_have_count(1)
    await expect(sources.first).to_contain_text("Lisbon guide")
    citation = answer.locator("a.cite")
    await expect(citation).to_have_text("[1]")
    assert await citation.get_attribute("href") == "#" + str(await sources.first.get_attribute("id"))
    await expect(turn.locator(".usage")).to_contain_text(f"{TOKENS} out")
    await expect(turn.locator(".usage")).to_contain_text("first token")
    # The streaming answer is announced politely to screen readers and is no longer busy.
    assert await answer.get_attribute("aria-live") == "polite"
    assert await answer.get_attribute("aria-busy") == "false"
    await expect(page.locator("#message")).to_be_focused()
    # What the page shows is what the engine recorded.
    (record,) = await history(web_engine, link.session_id)
    assert record.reply_text == answer_of(words)


async def test_a_dropped_connection_resumes_the_same_turn_without_gaps_or_repeats(
    web_engine: Engine, open_page: PageFactory, network_cut: CutFactory
) -> None:
    relay = await network_cut(web_engine.web_url)
    link = await mint_page_link(web_engine.target, relay.url)
    page = await open_page(link.url)
    await ready(page)
    words = message_words("Drop")
    await send(page, " ".join(words))
    turn, answer = last_turn(page)
    await expect(answer).to_contain_text("w05")  # streaming for a while

    # The network goes: the stream is cut mid-turn and the page cannot reconnect.
    await page.context.set_offline(True)
    assert relay.cut() >= 1
    await expect(turn).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#connection")).to_have_text("Offline")
    shown_while_offline = await answer.text_content()
    # The turn goes on upstream (the session's disconnect policy is to continue) and ends while the page is away.
    await wait_for(
        lambda: _recorded(web_engine, link.session_id), timeout_s=30, what="the turn to end while the page is offline"
    )
    assert await answer.text_content() == shown_while_offline
    assert len(shown_while_offline or "") < len(answer_of(words)), "the cut came too late to test anything"

    # Back online: the page resumes after the last event it saw and shows the rest, each token once.
    await page.context.set_offline(False)
    await expect(turn).to_have_attribute("data-state", "completed", timeout=30_000)
    await expect(answer).to_have_text(answer_of(words))
    (record,) = await history(web_engine, link.session_id)
    assert record.reply_text == answer_of(words)
    # Every sequence number applied once: the page's last is the turn's terminal event.
    assert await turn.get_attribute("data-last-seq") == str(await last_seq(web_engine, link.session_id, record.turn_id))
    await expect(page.locator("#connection")).to_have_text("Connected")


async def _recorded(engine: Engine, session_id: str) -> bool:
    return len(await history(engine, session_id)) == 1


async def test_the_stop_button_cancels_the_turn_upstream(web_engine: Engine, open_page: PageFactory) -> None:
    link = await mint_page_link(web_engine.target, web_engine.web_url)
    page = await open_page(link.url)
    await ready(page)
    words = message_words("Stop")
    await send(page, " ".join(words))
    turn, answer = last_turn(page)
    await expect(answer).to_contain_text("w03")
    await page.get_by_role("button", name="Stop").click()

    await expect(turn).to_have_attribute("data-state", "cancelled")
    await expect(turn.locator(".turn-status")).to_have_text("Stopped.")
    shown = await answer.text_content()
    assert shown and len(shown) < len(answer_of(words))
    (record,) = await history(web_engine, link.session_id)
    assert record.status == turn_pb2.TURN_STATUS_CANCELLED
    assert record.reply_text == shown
    # The page can go on: the next turn runs.
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await expect(page.get_by_role("button", name="Stop")).to_be_disabled()


async def test_a_token_for_one_session_is_refused_on_another(web_engine: Engine, open_page: PageFactory) -> None:
    mine = await mint_page_link(web_engine.target, web_engine.web_url)
    other = await mint_page_link(web_engine.target, web_engine.web_url)
    page = await open_page(mine.url)
    await ready(page)
    answers = await page.evaluate(
        """async ([other, token]) => {
            const headers = {authorization: `Bearer ${token}`, 'content-type': 'application/json'};
            const send = await fetch(`/v1/sessions/${other}/turns`,
                {method: 'POST', headers, body: JSON.stringify({text: 'hello'})});
            const read = await fetch(`/v1/sessions/${other}/history`, {headers});
            return [[send.status, await send.json()], [read.status, await read.json()]];
        }""",
        [other.session_id, mine.token],
    )
    for status, body in answers:
        assert status == 403
        assert body["error"]["reason"] == "TOKEN_SESSION_MISMATCH"
    assert await history(web_engine, other.session_id) == []

    # A tampered token (its claims changed to name the other session) is refused, and the page says so.
    prefix, key_id, claims, signature = mine.token.split(".")
    forged_claims = _replace_claim(claims, "sid", other.session_id)
    forged = await open_page(f"{web_engine.web_url}/#token={prefix}.{key_id}.{forged_claims}.{signature}")
    await expect(forged.locator("#notice")).to_contain_text("TOKEN_INVALID")
    await expect(forged.locator("#message")).to_be_disabled()


def _replace_claim(encoded: str, name: str, value: str) -> str:
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    claims[name] = value
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_keyboard_and_phone(web_engine: Engine, open_page: PageFactory) -> None:
    link = await mint_page_link(web_engine.target, web_engine.web_url)
    page = await open_page(link.url, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    await ready(page)
    message = page.locator("#message")
    await expect(message).to_be_focused()
    # Shift+Enter adds a line; Enter sends; Escape stops; Tab walks the composer in order.
    await message.type("Keyboard")
    await message.press("Shift+Enter")
    await message.type(" ".join(message_words("Keys")[1:]))
    assert "\n" in await message.input_value()
    await message.press("Enter")
    turn, answer = last_turn(page)
    await expect(answer).to_contain_text("w03")
    await message.press("Escape")
    await expect(turn).to_have_attribute("data-state", "cancelled")
    await message.focus()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "send"

    # Readable on a phone: nothing wider than the screen, the composer on screen, touch-sized buttons.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    box = await message.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert box["y"] + box["height"] <= 844
    for name in ("Send", "Stop"):
        button = await page.get_by_role("button", name=name).bounding_box()
        assert button is not None and button["height"] >= 44


async def test_a_person_rejects_a_tool_call_from_the_page(web_engine: Engine, open_page: PageFactory) -> None:
    # The backend gives the session a tool that needs a person's approval; the page's token may decide.
    async with grpc.aio.insecure_channel(web_engine.target) as channel:
        created = await cs_grpc.ConversationServiceStub(channel).CreateSession(
            cs_pb2.CreateSessionRequest(
                tools=session_pb2.ToolSet(
                    tools=[session_pb2.Tool(name="refund", description="Refund an order.", requires_approval=True)]
                )
            )
        )
    link = await mint_page_link(web_engine.target, web_engine.web_url, session_id=created.session.session_id)
    page = await open_page(link.url)
    await ready(page)
    message = page.locator("#message")
    # The scripted model calls the tool on the message's $CALL line, then answers with the other words.
    await message.fill('$CALL refund {"order": "A-1"}\nrefund declined, sorry')
    await message.press("Enter")
    turn, answer = last_turn(page)
    await expect(turn.locator(".tools")).to_contain_text("refund wants to run")
    await turn.get_by_role("button", name="Reject").click()
    await expect(turn.locator(".tools")).to_contain_text("Rejected.")
    await expect(turn).to_have_attribute("data-state", "completed", timeout=30_000)
    await expect(answer).to_contain_text("declined")
