"""The demo in a real browser: headless Chromium (Debian's), driven by Playwright.

A person's view of the product: start an answer, reload mid-stream (or go offline for two
seconds), and the final text is exactly the answer, with no token missing or repeated.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from asgi_resume.demo.app import create_app, fake_answer
from tests.support.server import serve

pytestmark = pytest.mark.anyio

OUTPUT = Path(__file__).resolve().parent.parent / ".test-output" / "browser"
TOKENS, PACE = 150, 0.03  # a 4.5 s answer
PROMPT = "Tell me about resumable streams"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium is not installed; ./scripts/test installs it (apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


async def start_answer(page: Page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("#status:has-text('connected')")
    await page.fill("#prompt", PROMPT)
    await page.click("button")
    # well into the answer, far from its end
    await page.wait_for_function("(document.querySelector('.message .text')?.textContent ?? '').split(' ').length > 30")


async def finish(page: Page, name: str) -> str:
    """Wait for the answer to finish; a screenshot of the page either way."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        await page.wait_for_selector(".message[data-status=done]", timeout=30_000)
    finally:
        await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
    return str(await page.text_content(".message .text"))


def name_of(backend: dict[str, Any]) -> str:
    return "cluster" if backend.get("redis_cluster") else "redis" if backend else "memory"


async def test_reload_mid_stream(browser: Browser, backend: dict[str, Any]) -> None:
    app = create_app(tokens=TOKENS, pace=PACE, **backend)
    async with serve(app) as url:
        page = await browser.new_page()
        await start_answer(page, url)
        await page.reload()
        text = await finish(page, f"reload-{name_of(backend)}")
        assert text == "".join(fake_answer(PROMPT, TOKENS))
        assert "resumed" in str(await page.text_content("#log"))
        await page.close()


async def test_two_seconds_offline(browser: Browser, backend: dict[str, Any]) -> None:
    app = create_app(tokens=TOKENS, pace=PACE, **backend)
    async with serve(app) as url:
        context = await browser.new_context()
        page = await context.new_page()
        await start_answer(page, url)
        await context.set_offline(True)
        await page.wait_for_selector("#status:has-text('disconnected')")
        await asyncio.sleep(2)  # the outage itself: the server keeps streaming meanwhile
        await context.set_offline(False)
        text = await finish(page, f"offline-{name_of(backend)}")
        assert text == "".join(fake_answer(PROMPT, TOKENS))
        assert "resumed" in str(await page.text_content("#log"))
        await context.close()


FIRST_FRAME = """() => {
  const text = document.querySelector('.message .text')?.textContent;
  return text ? performance.now() : false;
}"""
TIMED_TRIES = 20  # of each: reloads, and new tabs of the same user
#: the bug this guards against waited for the helper's 5 s fence; a page on a loaded 2-core machine
#: (another suite's load beside it) took 1,153 ms once
FIRST_FRAME_BOUND_MS = 2500


@pytest.mark.parametrize("log", ["memory", "redis"])
async def test_reloads_and_new_tabs_show_the_stream_well_before_the_fence(
    browser: Browser, log: str, request: pytest.FixtureRequest
) -> None:
    """A page opened mid-stream shows its first frame at once, however its transports race.

    The default client starts on long-polling and upgrades: a resume request it sent by polling
    while the websocket probe was open used to be answered on the websocket before the client had
    switched to it; the client dropped the answer and only asked again after its 5 s fence.
    """
    backend: dict[str, Any] = {}
    if log == "redis":
        server = request.getfixturevalue("redis_server")
        backend = {"redis_url": server.url, "key_prefix": f"first-frame-{id(request)}"}
    app = create_app(tokens=2000, pace=0.02, **backend)  # 40 s: longer than every try together
    async with serve(app) as url:
        context = await browser.new_context()
        page = await context.new_page()
        await start_answer(page, url)
        timings: list[tuple[str, float]] = []
        for _ in range(TIMED_TRIES):
            await page.reload()
            handle = await page.wait_for_function(FIRST_FRAME, polling=10, timeout=15_000)
            timings.append(("reload", float(await handle.json_value())))
        for _ in range(TIMED_TRIES):
            tab = await context.new_page()
            await tab.goto(url)
            handle = await tab.wait_for_function(FIRST_FRAME, polling=10, timeout=15_000)
            timings.append(("new tab", float(await handle.json_value())))
            await tab.close()
        await context.close()
    slow = [(kind, round(ms)) for kind, ms in timings if ms > FIRST_FRAME_BOUND_MS]
    bound = FIRST_FRAME_BOUND_MS
    assert not slow, f"{len(slow)} of {len(timings)} pages took over {bound} ms to their first frame: {slow}"
