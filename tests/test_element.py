"""`<tidings-progress>` in a real headless Chromium, on an app's own page served by a second HTTP
server on another port (another origin, under a strict Content-Security-Policy), against real
service and worker processes: the bar fills to the end across a SIGKILL and restart of the
service, every event arrives once, `tidings:done` fires once with the job read cross-origin,
and an expired link is refreshed through the app's backend (or, without a refresher, reported
as expired)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from service.client import Client
from service.core.embedded import free_port
from service.producer import Producer
from tests.helpers import Stack, eventually
from tests.test_dashboard import NETWORK_NOISE, chromium, track

pytestmark = pytest.mark.browser
KEY = "k-element-" + "e" * 24
expect.set_options(timeout=15_000)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Your export</title>
  <script type="module" src="{service}/static/tidings-progress.js"></script>
  <script type="module" src="/page.js"></script>
  <link rel="stylesheet" href="/page.css">
</head>
<body>
  <h1>Your export</h1>
  <tidings-progress id="main" src="{events_url}"></tidings-progress>
  <tidings-progress id="plain" src="{events_url}" label="Export, no refresher"></tidings-progress>
</body>
</html>
"""
# the page's own code: what an app writes around the element
PAGE_JS = """
window.seen = [];
window.done = [];
window.expired = [];
window.progressEvents = 0;
const main = document.getElementById("main");
main.refreshUrl = async ({ job }) => {
  const r = await fetch(`/fresh/${job}`);  // the app's backend holds the API key
  return r.ok ? (await r.json()).events_url : null;
};
document.addEventListener("tidings:event", (e) => {
  if (e.target.id === "main") window.seen.push([e.detail.id, e.detail.type]);
});
document.addEventListener("tidings:progress", (e) => {
  if (e.target.id === "main") window.progressEvents += 1;
});
document.addEventListener("tidings:done", (e) => window.done.push([e.target.id, e.detail]));
document.addEventListener("tidings:expired", (e) => window.expired.push(e.target.id));
"""
PAGE_CSS = """
tidings-progress {
  --tidings-bar-color: rgb(102, 51, 153);
  --tidings-success-color: rgb(0, 100, 0);
  margin: 1rem 0;
}
tidings-progress::part(state) { text-transform: uppercase; }
"""


@dataclass
class App:
    """An app's own web server: renders its page with a job's events URL, and mints fresh ones
    for the page (with the API key, which never reaches the browser)."""

    service: str
    port: int = field(default_factory=free_port)
    fresh_calls: int = 0
    runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        csp = (
            f"default-src 'self'; script-src 'self' {self.service}; "
            f"connect-src 'self' {self.service}; style-src 'self'; object-src 'none'"
        )

        async def page(request: web.Request) -> web.Response:
            async with Client(self.service, KEY) as c:
                links = await c.watch_links(request.match_info["id"])
            html = PAGE.format(service=self.service, events_url=links.events_url)
            return web.Response(
                text=html, content_type="text/html", headers={"Content-Security-Policy": csp}
            )

        async def fresh(request: web.Request) -> web.Response:
            self.fresh_calls += 1
            async with Client(self.service, KEY) as c:
                links = await c.watch_links(request.match_info["id"])
            return web.json_response({"events_url": links.events_url})

        async def page_js(request: web.Request) -> web.Response:
            return web.Response(text=PAGE_JS, content_type="text/javascript")

        async def page_css(request: web.Request) -> web.Response:
            return web.Response(text=PAGE_CSS, content_type="text/css")

        async def favicon(request: web.Request) -> web.Response:
            return web.Response(status=204)

        app.router.add_get("/favicon.ico", favicon)
        app.router.add_get("/job/{id}", page)
        app.router.add_get("/fresh/{id}", fresh)
        app.router.add_get("/page.js", page_js)
        app.router.add_get("/page.css", page_css)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def start(
    stack_factory: Callable[..., Stack], redis_url: str, **env: str
) -> tuple[Stack, App]:
    app_port = free_port()
    st = stack_factory(
        redis_url,
        TIDINGS_AUTH_API_KEYS=KEY,
        TIDINGS_HTTP_CORS_ORIGINS=f"http://127.0.0.1:{app_port}",
        TIDINGS_SSE_RETRY_MS="300",
        TIDINGS_WORKERS_TASKS="workers.demo",
        **env,
    )
    await st.start_service()  # workers come once the page is up, so it sees the whole job
    app = App(st.http, port=app_port)
    await app.start()
    return st, app


async def stored(p: Producer, job_id: str) -> list[list[str]]:
    _, events = await p.snapshot(job_id)
    return [[e.id.decode(), e.type] for e in events]


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page()
    track(page, errors)
    await page.goto(url)
    return page


async def test_element_on_another_origin_fills_up_across_a_service_restart(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st, app = await start(stack_factory, redis_url)
    p = await st.producer()
    errors: list[str] = []
    try:
        async with Client(st.http, KEY) as c:
            job = await c.submit("demo.count", {"n": 40, "delay": 0.15})
        page = await open_page(browser, f"{app.origin}/job/{job.id}", errors)
        el = page.locator("#main")
        bar = el.get_by_role("progressbar")
        await expect(el).to_have_attribute("data-state", "queued")
        await expect(el).to_have_attribute("data-connection", "live")
        await st.start_workers(1)
        await expect(bar).to_have_attribute("aria-valuemax", "40")
        await expect(el).to_have_attribute("data-state", "running")

        async def progressed(at_least: int) -> bool:
            return ((await p.get(job.id)).progress.current or 0) >= at_least

        await eventually(lambda: progressed(3), what="the job under way")
        assert st.service is not None
        os.killpg(st.service.pid, signal.SIGKILL)
        await asyncio.to_thread(st.service.wait)
        await expect(el).not_to_have_attribute("data-connection", "live")
        now = (await p.get(job.id)).progress.current or 0
        await eventually(lambda: progressed(int(now) + 3), what="progress while down")
        await st.start_service()

        await expect(bar).to_have_attribute("aria-valuenow", "40", timeout=30_000)
        await expect(bar).to_have_attribute("aria-valuemax", "40")
        await expect(el).to_have_attribute("data-state", "succeeded")
        await expect(el.locator("[part=message]")).to_have_text("step 40")
        await expect(el.locator("[part=count]")).to_have_text("40 / 40")
        await expect(el).to_have_attribute("data-connection", "ended")
        # styled from the page: a custom property and a ::part()
        fill = el.locator("[part=bar]")
        assert await fill.evaluate("e => getComputedStyle(e).backgroundColor") == ("rgb(0, 100, 0)")
        assert await el.locator("[part=state]").evaluate(
            "e => getComputedStyle(e).textTransform"
        ) == ("uppercase")

        async def done() -> list[Any]:
            got: list[Any] = await page.evaluate("window.done.filter(([id]) => id === 'main')")
            return got

        finished = await eventually(done, what="tidings:done")
        assert len(finished) == 1
        final = finished[0][1]  # the job, read from its status URL across origins
        assert final["id"] == job.id and final["state"] == "succeeded"
        assert final["result"] == {"total": 40} and final["created_at"]
        # every event exactly once, in order, as stored: the browser resumed after the restart
        assert await page.evaluate("window.seen") == await stored(p, job.id)
        assert await page.evaluate("window.progressEvents") == 40
        await expect(page.locator("#plain")).to_have_attribute("data-state", "succeeded")
        assert await page.evaluate("window.done.length") == 2  # one per element, once each
    finally:
        await app.close()
    assert not [e for e in errors if NETWORK_NOISE not in e], errors


async def test_expired_links_are_refreshed_by_the_page_or_reported(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    # tokens live 2 s and streams are cut every second: the element reconnects with dead links
    st, app = await start(
        stack_factory, redis_url, TIDINGS_AUTH_TOKEN_TTL_S="2", TIDINGS_SSE_MAX_AGE_S="1"
    )
    p = await st.producer()
    errors: list[str] = []
    try:
        async with Client(st.http, KEY) as c:
            job = await c.submit("demo.count", {"n": 20, "delay": 0.15})
        page = await open_page(browser, f"{app.origin}/job/{job.id}", errors)
        main, plain = page.locator("#main"), page.locator("#plain")
        # no refresher: the element says so and tells the page
        await expect(plain).to_have_attribute("data-state", "expired")
        await expect(plain.locator("[part=state]")).to_have_text("link expired")
        assert await page.evaluate("window.expired") == ["plain"]
        # with one: it keeps going on fresh links from the app's backend
        await eventually(lambda: asyncio.sleep(0, app.fresh_calls >= 2), what="two refreshes")
        await expect(main).to_have_attribute("data-state", "queued")
        await st.start_workers(1)
        bar = main.get_by_role("progressbar")
        await expect(bar).to_have_attribute("aria-valuenow", "20", timeout=30_000)
        await expect(main).to_have_attribute("data-state", "succeeded")
        assert app.fresh_calls >= 1
        assert await page.evaluate("window.seen") == await stored(p, job.id)
        assert await page.evaluate("window.done.map(([id]) => id)") == ["main"]
    finally:
        await app.close()
    # the browser's own lines for the refused (401) reconnects, and nothing else
    assert not [e for e in errors if NETWORK_NOISE not in e and "401" not in e], errors
