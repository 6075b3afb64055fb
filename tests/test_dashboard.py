"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright) against
real service and worker processes: the live jobs list, the job page's event log across a service
crash, the submit form, cancel and retry, dead letters, and no console errors anywhere. Pages are
served under a strict Content-Security-Policy, so an inline script or style would show up as a
console error.

Set TIDINGS_SCREENSHOTS=docs to (re)write the README screenshots docs/dashboard-*.png (with
tests/test_operator.py, which writes the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from tests.helpers import ROOT, Stack, eventually

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
# The service registers only the demo tasks (the workers run tests.tasks as well): the dashboard
# is tested with the tasks a user sees. A short SSE retry keeps the restart test quick.
SERVICE_ENV = {"TIDINGS_WORKERS_TASKS": "workers.demo", "TIDINGS_SSE_RETRY_MS": "300"}
SHOTS = os.environ.get("TIDINGS_SCREENSHOTS")
# what Chromium itself logs for the refused or cut connections while the service is down
NETWORK_NOISE = "net::ERR_"


expect.set_options(timeout=10_000)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium, headless (the test is skipped without it)."""
    if not HAVE_CHROMIUM:
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)

    def assert_no_errors(self, *expected: str) -> None:
        """No console errors and no uncaught exceptions, except one per `expected` substring
        (e.g. the browser's own line for a 422 the test provoked)."""
        left = list(self.errors)
        for want in expected:
            hit = next((e for e in left if want in e), None)
            assert hit is not None, f"expected a console line with {want!r}: {self.errors}"
            left.remove(hit)
        assert not left, f"console errors: {left}"


async def open_tab(browser: Browser, st: Stack, *, width: int = 1280, height: int = 900) -> Tab:
    ctx = await browser.new_context(
        viewport={"width": width, "height": height}, base_url=st.http, color_scheme="light"
    )

    async def with_csp(route: Route) -> None:
        resp = await route.fetch()
        headers = {**resp.headers, "content-security-policy": CSP}
        await route.fulfill(response=resp, headers=headers)

    # the HTML documents get the strict policy the service will send
    await ctx.route(lambda url: "/api/" not in url and "/static/" not in url, with_csp)
    tab = Tab(await ctx.new_page())
    track(tab.page, tab.errors)
    return tab


def track(page: Page, errors: list[str]) -> None:
    """Collect the page's console errors and uncaught exceptions."""

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text} @ {msg.location.get('url', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))


async def start_stack(stack_factory: Callable[..., Stack], url: str) -> Stack:
    st = stack_factory(url)
    await st.start_service(**SERVICE_ENV)
    await st.start_workers(1)
    return st


async def api(
    st: Stack, method: str, path: str, body: Any = None, *, key: str | None = None
) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, st.http + path, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def submit(st: Stack, task: str, payload: dict[str, Any], **opts: Any) -> dict[str, Any]:
    status, job = await api(st, "POST", "/api/jobs", {"task": task, "payload": payload, **opts})
    assert status == 201, job
    return dict(job)


async def stored_event_ids(st: Stack, job_id: str) -> list[tuple[str, str]]:
    status, events = await api(st, "GET", f"/api/jobs/{job_id}/events")
    assert status == 200
    return [(e["id"], e["event"]) for e in events]


async def shown_event_ids(page: Page) -> list[tuple[str, str]]:
    rows: list[list[str]] = await page.locator("tr[data-event-id]").evaluate_all(
        "els => els.map(e => [e.dataset.eventId, e.dataset.event])"
    )
    return [(i, t) for i, t in rows]


async def wait_state(st: Stack, job_id: str, *states: str, within: float = 15) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        _, job = await api(st, "GET", f"/api/jobs/{job_id}")
        return dict(job) if job["state"] in states else None

    return await eventually(check, timeout=within, what=f"job {job_id} in {states}")


async def screenshot(page: Page, name: str) -> None:
    if SHOTS:
        out = ROOT / SHOTS / name
        out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(out))


async def no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"page is {width}px wide in a {viewport}px window"


async def test_list_shows_a_new_job_live_and_its_bar_reaches_100(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto("/")
    await expect(page.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")
    await expect(
        page.locator('.queue-card[data-queue="default"] .fig-workers .fig-n')
    ).to_have_text("1")
    # remember every value the new job's bar takes, and that the page is never reloaded
    await page.evaluate(
        """() => {
          window.noReload = true;
          window.seen = [];
          new MutationObserver((ms) => {
            for (const m of ms) {
              const tr = m.target.closest("tr[data-job-id]");
              if (tr) window.seen.push([tr.dataset.jobId, m.target.getAttribute("aria-valuenow")]);
            }
          }).observe(document.body, {
            subtree: true, attributes: true, attributeFilter: ["aria-valuenow"],
          });
        }"""
    )
    job = await submit(st, "demo.count", {"n": 6, "delay": 0.1})
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')
    await expect(row).to_be_visible()
    assert (
        await page.locator("tbody tr[data-job-id]").first.get_attribute("data-job-id") == job["id"]
    )
    bar = row.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuemax", "6")
    await expect(bar).to_have_attribute("aria-valuenow", "6")
    await expect(bar).to_have_attribute("aria-valuetext", re.compile(r"6 of 6 \(100%\) — step 6"))
    await expect(row.locator(".badge")).to_have_text("succeeded")
    await expect(row.locator(".c-attempt")).to_have_text("1/3")
    seen = [int(v) for j, v in await page.evaluate("window.seen") if j == job["id"]]
    assert any(0 < v < 6 for v in seen), f"the bar never moved live: {seen}"
    assert seen == sorted(seen)
    assert await page.evaluate("window.noReload") is True

    # a mix of states, for the filters and the screenshot
    failed = await submit(st, "demo.fail", {"message": "disk full"}, max_attempts=1)
    later = await submit(st, "demo.count", {"n": 3}, delay_s=600)
    long = await submit(st, "demo.count", {"n": 400, "delay": 0.05})
    await expect(page.locator(f'tr[data-job-id="{failed["id"]}"] .badge')).to_have_text("failed")
    await expect(page.locator(f'tr[data-job-id="{later["id"]}"] .badge')).to_have_text("scheduled")
    long_bar = page.locator(f'tr[data-job-id="{long["id"]}"]').get_by_role("progressbar")
    await expect(long_bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"))
    await expect(page.locator("tbody tr[data-job-id]")).to_have_count(4)
    await expect(page.locator('.queue-card[data-queue="default"] .fig-dead .fig-n')).to_have_text(
        "1"
    )
    await expect(
        page.locator('.queue-card[data-queue="default"] .fig-scheduled .fig-n')
    ).to_have_text("1")
    await screenshot(page, "dashboard-list.png")

    # filter by state: the URL keeps the filter; only failed jobs are listed
    await page.get_by_label("State").select_option("failed")
    await expect(page).to_have_url(re.compile(r"/\?state=failed$"))
    await expect(page.locator("tbody tr[data-job-id]")).to_have_count(1)
    await expect(page.locator(f'tr[data-job-id="{failed["id"]}"]')).to_be_visible()
    # ... and a job failing now joins the filtered list live
    again = await submit(st, "demo.fail", {}, max_attempts=1)
    await expect(page.locator(f'tr[data-job-id="{again["id"]}"] .badge')).to_have_text("failed")
    await expect(page.locator("tbody tr[data-job-id]")).to_have_count(2)
    await page.get_by_label("State").select_option("")
    await expect(page.locator("tbody tr[data-job-id]")).to_have_count(5)

    # readable on a phone and on a big screen; dark by preference
    await page.set_viewport_size({"width": 375, "height": 800})
    await no_horizontal_scroll(page)
    await expect(bar).to_be_visible()
    await screenshot(page, "dashboard-list-375.png")
    await page.set_viewport_size({"width": 1920, "height": 1080})
    await no_horizontal_scroll(page)
    await page.emulate_media(color_scheme="dark")
    bg = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(14, 18, 23)", bg
    await screenshot(page, "dashboard-list-dark.png")

    assert (await api(st, "POST", f"/api/jobs/{long['id']}/cancel"))[0] == 202
    tab.assert_no_errors()


async def test_job_page_log_matches_the_stored_events_after_a_service_crash(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    n = 40
    job = await submit(st, "demo.count", {"n": n, "delay": 0.2})
    # the list in a second tab rides out the crash too
    lst = await page.context.new_page()
    track(lst, tab.errors)
    await lst.goto("/")
    await expect(lst.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")
    await page.goto(f"/jobs/{job['id']}")
    await expect(page.locator(".view-job h1")).to_have_text("demo.count")
    status = page.locator(".view-job .stream")
    await expect(status).to_have_attribute("data-status", "live")
    await expect(page.locator('tr[data-event="progress"]').nth(2)).to_be_attached()
    shown_before = len(await shown_event_ids(page))

    assert st.service is not None
    os.killpg(st.service.pid, signal.SIGKILL)
    await asyncio.to_thread(st.service.wait)
    await expect(status).not_to_have_attribute("data-status", "live")
    # the job goes on while the service is down: those events must not be lost
    producer = await st.producer()
    at_kill = (await producer.get(job["id"])).progress.current or 0

    async def progressed() -> bool:
        # a few steps (or the end: on a loaded machine the page may have been slow to open)
        return ((await producer.get(job["id"])).progress.current or 0) >= min(at_kill + 4, n)

    await eventually(progressed, timeout=15, what="progress while the service is down")
    await st.start_service(**SERVICE_ENV)

    await expect(page.locator(".view-job .view-head .badge")).to_have_text(
        "succeeded", timeout=20_000
    )
    stored = await stored_event_ids(st, job["id"])
    assert len(stored) == 1 + 1 + n + 1  # queued, started, n progress, succeeded
    await expect(page.locator("tr[data-event-id]")).to_have_count(len(stored))
    shown = await shown_event_ids(page)
    assert shown == stored
    assert shown_before < len(shown)
    bar = page.locator(".job-progress").get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", str(n))
    await expect(bar).to_have_attribute("aria-valuemax", str(n))
    await expect(page.locator(".card-result pre")).to_contain_text(f'"total": {n}')
    await expect(page.locator(".card-payload pre")).to_contain_text(f'"n": {n}')
    await expect(status).to_have_text("finished")
    row = lst.locator(f'tr[data-job-id="{job["id"]}"]')
    await expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", str(n))
    await expect(row.locator(".badge")).to_have_text("succeeded")
    await expect(lst.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")
    await page.set_viewport_size({"width": 375, "height": 800})
    await no_horizontal_scroll(page)
    # while the service was down, Chromium logs the refused reconnects itself; nothing else
    tab.errors[:] = [e for e in tab.errors if NETWORK_NOISE not in e]
    tab.assert_no_errors()


async def test_submit_form_shows_422_next_to_the_field_then_submits(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto("/")
    await page.get_by_role("link", name="New job").first.click()
    await expect(page).to_have_url(re.compile(r"/\?view=new$"))
    task = page.get_by_label("Task")
    await task.select_option("demo.count")
    n = page.get_by_label("n", exact=True)
    delay = page.get_by_label("delay", exact=True)
    await expect(delay).to_have_value("0.2")  # the schema's default
    await expect(page.locator('[data-field="n"] .hint')).to_contain_text("integer · required")

    await n.fill("seven")
    await page.get_by_role("button", name="Submit job").click()
    error = page.locator('[data-field="n"] .field-error')
    await expect(error).to_have_text("Expected `int`, got `str`")
    await expect(n).to_have_attribute("aria-invalid", "true")
    await expect(n).to_be_focused()
    await expect(page.locator('[data-field="delay"] .field-error')).to_be_hidden()

    await n.fill("")  # a missing required field is named in the message, not the path
    await page.get_by_role("button", name="Submit job").click()
    await expect(error).to_have_text("Object missing required field `n`")

    # the JSON editor carries the same payload
    await n.fill("5")
    await delay.fill("0.05")
    await page.get_by_label("Edit the payload as JSON").check()
    await expect(page.get_by_label("Payload (JSON)")).to_have_value(
        '{\n  "n": 5,\n  "delay": 0.05\n}'
    )
    await page.get_by_label("Edit the payload as JSON").uncheck()
    await expect(n).to_have_value("5")
    await expect(error).to_be_hidden()

    await n.press("Enter")  # keyboard submit
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-z]{26}$"))
    job_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator(".view-job .view-head .badge")).to_have_text("succeeded")
    _, job = await api(st, "GET", f"/api/jobs/{job_id}")
    assert job["task"] == "demo.count" and job["payload"] == {"n": 5, "delay": 0.05}
    await expect(page.locator("tr[data-event-id]")).to_have_count(
        len(await stored_event_ids(st, job_id))
    )
    # back to the list: the new job is there
    await page.go_back()
    await expect(page).to_have_url(re.compile(r"/\?view=new"))
    await page.goto("/")
    await expect(page.locator(f'tr[data-job-id="{job_id}"] .badge')).to_have_text("succeeded")
    tab.assert_no_errors("422", "422")


async def test_cancel_then_retry_from_the_job_page(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    job = await submit(st, "demo.count", {"n": 600, "delay": 0.05})
    await page.goto(f"/jobs/{job['id']}")
    state = page.locator(".view-job .view-head .badge")
    await expect(state).to_have_text("running")
    await expect(page.locator('tr[data-event="progress"]').nth(1)).to_be_attached()
    retry = page.get_by_role("button", name="Retry")
    await expect(retry).to_be_hidden()
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    dialog = page.get_by_role("dialog")
    # every toast shown, even one that goes at once
    await page.evaluate(
        """() => {
          window.toasts = [];
          new MutationObserver((ms) => {
            for (const m of ms) for (const n of m.addedNodes) window.toasts.push(n.textContent);
          }).observe(document.getElementById("toast"), { childList: true });
        }"""
    )
    # cancel asks first; going back changes nothing
    await cancel.focus()
    await page.keyboard.press("Enter")
    await expect(dialog).to_contain_text("Cancel this job?")
    await expect(dialog.get_by_role("button", name="Go back")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(cancel).to_be_focused()
    assert (await api(st, "GET", f"/api/jobs/{job['id']}"))[1]["state"] == "running"
    await page.keyboard.press("Enter")
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(state).to_have_text("cancelled")
    await expect(page.locator("tr[data-event-id]").last).to_have_attribute(
        "data-event", "cancelled"
    )
    await expect(cancel).to_be_hidden()
    assert (await api(st, "GET", f"/api/jobs/{job['id']}"))[1]["state"] == "cancelled"
    # the toast said what was coming, and went once it came: it no longer covers the page
    assert any("Cancellation requested" in t for t in await page.evaluate("window.toasts"))
    await expect(page.locator("#toast")).not_to_contain_text("Cancellation requested")

    # retry: the same page follows the job again from where its log stopped
    await retry.click()
    await expect(state).to_have_text("running")
    await expect(page.locator('tr[data-event="started"]')).to_have_count(2)
    await cancel.click()
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(state).to_have_text("cancelled")
    await expect(page.locator('tr[data-event="cancelled"]')).to_have_count(2)
    stored = await stored_event_ids(st, job["id"])
    await expect(page.locator("tr[data-event-id]")).to_have_count(len(stored))
    assert await shown_event_ids(page) == stored

    # a job that has not started is cancelled at once
    later = await submit(st, "demo.count", {"n": 1}, delay_s=600)
    await page.goto(f"/jobs/{later['id']}")
    await expect(state).to_have_text("scheduled")
    await cancel.click()
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(page.locator("#toast")).to_contain_text("Job cancelled.")
    await expect(state).to_have_text("cancelled")
    tab.assert_no_errors()


async def test_dead_letters_view_retries_a_job(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    job = await submit(st, "demo.fail", {"message": "upstream said no"}, max_attempts=1)
    await wait_state(st, job["id"], "failed")
    tab = await open_tab(browser, st, width=375, height=800)
    page = tab.page
    await page.goto("/")
    await page.get_by_role("link", name="Dead letters").click()
    await expect(page).to_have_url(re.compile(r"/\?view=dead$"))
    item = page.locator(f'li[data-job-id="{job["id"]}"]')
    await expect(item).to_contain_text("RuntimeError: upstream said no")
    await expect(page.get_by_label("Queue", exact=True)).to_have_value("default")
    await no_horizontal_scroll(page)
    await item.get_by_role("button", name=re.compile("^Retry")).click()
    await expect(item.locator(".outcome")).to_contain_text("Queued again")

    # demo.fail fails again: a second run, and back among the dead letters
    async def failed_twice() -> bool:
        return sum(t == "failed" for _, t in await stored_event_ids(st, job["id"])) == 2

    await eventually(failed_twice, timeout=15, what="the retried job to fail again")
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator(f'li[data-job-id="{job["id"]}"] button')).to_have_text("Retry")
    await item.get_by_role("link").first.click()
    await expect(page).to_have_url(re.compile(rf"/jobs/{job['id']}$"))
    await expect(page.locator(".card-error .error-msg")).to_have_text(
        "RuntimeError: upstream said no"
    )
    await expect(page.locator('tr[data-event="failed"]')).to_have_count(2)
    tab.assert_no_errors()


async def test_with_auth_the_page_signs_in_once_and_keeps_the_key_out_of_urls_and_storage(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    key, wrong = "k-test-123", "k-wrong-456"
    st = stack_factory(redis_url, TIDINGS_AUTH_API_KEYS=key)
    await st.start_service(**SERVICE_ENV)
    await st.start_workers(1)
    assert (await api(st, "GET", "/api/queues"))[0] == 401
    tab = await open_tab(browser, st)
    page = tab.page
    requests: list[tuple[str, str, str]] = []  # (method, url, body) of everything the page sent
    page.on("request", lambda r: requests.append((r.method, r.url, r.post_data or "")))

    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    field = page.get_by_label("API key")
    await expect(field).to_have_attribute("type", "password")
    await expect(field).to_be_focused()
    await expect(page.locator(".view-jobs")).to_have_count(0)
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

    # a wrong key: an error next to the field, which is emptied and focused again
    await field.fill(wrong)
    await page.get_by_role("button", name="Sign in").click()
    error = page.get_by_role("alert")
    await expect(error).to_have_text(re.compile("not accepted"))
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_have_value("")
    await expect(field).to_be_focused()

    # the right key, by keyboard: the jobs list, live on the firehose (it rides on the cookie)
    await field.fill(key)
    await field.press("Enter")
    await expect(page.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")
    await expect(page).to_have_url(st.http + "/")
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    signout = page.get_by_role("button", name="Sign out")
    await expect(signout).to_be_visible()
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["tidings_session"]["httpOnly"] is True
    assert cookies["tidings_session"]["sameSite"] == "Strict"
    assert "tidings_session" not in await page.evaluate("document.cookie")

    status, job = await api(
        st, "POST", "/api/jobs", {"task": "demo.count", "payload": {"n": 6, "delay": 0.1}}, key=key
    )
    assert status == 201, job
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')
    bar = row.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", "6")
    await expect(bar).to_have_attribute("aria-valuemax", "6")
    await expect(row.locator(".badge")).to_have_text("succeeded")
    await expect(
        page.locator('.queue-card[data-queue="default"] .fig-workers .fig-n')
    ).to_have_text("1")

    # the session ends (expiry, or a rotated key): the next call's 401 brings the form back on
    # the same URL, and signing in again shows what that URL names (the list polls nothing, so
    # the next call is the user's: a search)
    await page.get_by_label("State").select_option("succeeded")
    await expect(page).to_have_url(re.compile(r"/\?state=succeeded$"))
    await page.context.clear_cookies()
    await page.get_by_role("searchbox", name="Job id").fill(job["id"][:12])
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_text("Your session has ended")).to_be_visible()
    want = re.compile(rf"/\?q={job['id'][:12]}&state=succeeded$")
    await expect(page).to_have_url(want)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_label("State")).to_have_value("succeeded")
    await expect(page.get_by_role("searchbox", name="Job id")).to_have_value(job["id"][:12])
    await expect(row.locator(".badge")).to_have_text("succeeded")
    await expect(page.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")

    # the key is nowhere the page keeps things, and it never went into a URL
    stored = await page.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert key not in stored and wrong not in stored
    assert key not in await page.content()
    urls = [u for _, u, _ in requests]
    assert any("/api/events" in u for u in urls), urls
    assert not [u for u in urls if key in u or wrong in u], urls
    logins = [b for m, u, b in requests if m == "POST" and u.endswith("/api/session")]
    assert len(logins) == 3 and key in logins[-1]  # it goes in the body, once per sign-in

    # signing out ends the session: the form again, no cookie, and the API says so
    await signout.click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    await expect(page.get_by_label("API key")).to_be_focused()
    assert "tidings_session" not in {c["name"] for c in await page.context.cookies()}
    assert await page.evaluate("fetch('/api/session').then((r) => r.json())") == {
        "auth": True,
        "signed_in": False,
    }
    # the wrong key's 403, and the 401 that ended the first session
    tab.assert_no_errors("403", "401")
