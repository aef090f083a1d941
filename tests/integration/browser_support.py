"""Fixtures for the chat page in a real browser: the system's Chromium, driven by Playwright. Test modules import
them (``from browser_support import browser, open_page, network_cut``).

Playwright never downloads a browser here: it launches the Chromium that the operating system's packages install
(``make chromium``), by path. Without one the tests are skipped, unless ``SALON_REQUIRE_BROWSER=1`` (CI sets it),
which makes a missing browser a failure. A failing test leaves a screenshot of each page it opened in a temporary
directory, whose path is printed with the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """The system's Chromium, if installed."""
    for candidate in (os.environ.get("SALON_CHROMIUM", ""), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests."""
    path = chromium_path()
    if path is None:
        message = "no Chromium installed (make chromium installs the system's package)"
        if os.environ.get("SALON_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


PageFactory = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[PageFactory]:
    """Open pages, each in a fresh browser context (``open_page(url, **context_options)``); on failure, screenshot
    them into a temporary directory and print its path. Errors the page's script throws fail the test."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []
    script_errors: list[str] = []

    async def open_(url: str, **options: Any) -> Page:
        context = await browser.new_context(**options)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        pages.append(page)
        await page.goto(url)
        return page

    failed_before = request.session.testsfailed
    yield open_
    try:
        # The call phase's report is logged (and counted) before fixtures are torn down.
        if request.session.testsfailed > failed_before and pages:
            folder = Path(tempfile.mkdtemp(prefix="salon-browser-"))
            for n, page in enumerate(pages):
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(folder / f"{request.node.name}-{n}.png"), full_page=True)
            note = f"screenshots of the failed test's pages: {folder}"
            print(note, file=sys.stderr)
            request.node.add_report_section("teardown", "screenshots", note)
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):
                await context.close()
    assert not script_errors, f"the page's script failed: {script_errors}"


class NetworkCut:
    """A TCP relay between the browser and the bridge that the test can cut, as a dropped network would: every
    open connection is closed at once, mid-stream (Chromium's offline emulation leaves open streams running)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The bridge's address through the relay."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        with contextlib.suppress(OSError):
            sink.close()

    def cut(self) -> int:
        """Drop every open connection; returns how many there were."""
        writers = list(self._writers)
        for writer in writers:
            transport = writer.transport
            transport.abort()  # no FIN handshake: the peer sees the connection reset, as on a real drop
        return len(writers) // 2

    async def close(self) -> None:
        """Stop relaying."""
        if self._server is not None:
            self._server.close()
            self.cut()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None


CutFactory = Callable[[str], Awaitable[NetworkCut]]


@pytest.fixture
async def network_cut() -> AsyncIterator[CutFactory]:
    """``await network_cut(bridge_url)``: a relay to the bridge at ``bridge_url`` that the test can cut."""
    relays: list[NetworkCut] = []

    async def make(bridge_url: str) -> NetworkCut:
        host, port = bridge_url.removeprefix("http://").rsplit(":", 1)
        relay = NetworkCut(host, int(port))
        await relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()
