"""The dashboard as an operator uses it on a bad day, in a real headless Chromium against real
service and worker processes: find a job by the first characters of its id, retry 500 dead
letters with one confirmation, pause a queue while workers run, see the worker processes (and
lose one that is killed), queue figures that agree with the API under load, and a 300-step job
whose page stays short. Waits are on conditions (the page's or the API's), never on sleeps.

Set TIDINGS_SCREENSHOTS=docs to (re)write the README screenshots these pages provide.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Request, expect

from service.core.wire import job_id_time_ms, new_job_id
from tests.helpers import Stack, eventually, worker_children
from tests.test_dashboard import (
    SERVICE_ENV,
    api,
    chromium,
    open_tab,
    screenshot,
    start_stack,
    submit,
    wait_state,
)

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def queue_figures(st: Stack, name: str = "default") -> dict[str, Any]:
    status, body = await api(st, "GET", "/api/queues")
    assert status == 200, body
    found = [q for q in body["queues"] if q["name"] == name]
    assert found, body
    return dict(found[0])


async def card_figures(page: Page, name: str = "default") -> dict[str, Any]:
    """The figures a queue card shows, and when the service computed them (one read)."""
    out: dict[str, Any] = await page.evaluate(
        """(name) => {
          const card = document.querySelector(`.queue-card[data-queue="${name}"]`);
          if (!card) return null;
          const n = (k) => Number(card.querySelector(`.fig-${k} .fig-n`).textContent);
          return {
            queued: n("queued"), running: n("running"), scheduled: n("scheduled"),
            dead: n("dead"), workers: n("workers"), paused: card.dataset.paused === "true",
            at: Date.parse(document.querySelector(".queues").dataset.statsAt),
            now: Date.now(),
          };
        }""",
        name,
    )
    return out


def card_fig(page: Page, key: str, name: str = "default") -> Any:
    return page.locator(f'.queue-card[data-queue="{name}"] .fig-{key} .fig-n')


async def test_find_a_job_by_an_8_character_id_prefix(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    target = await submit(st, "demo.count", {"n": 1, "delay": 0})
    created = job_id_time_ms(target["id"])
    second_after = (created // 1000 + 1) * 1000

    # the noise comes later: another id prefix, another second
    async def later() -> bool:
        return new_job_id()[:8] != target["id"][:8] and time.time() * 1000 > second_after

    await eventually(later, what="a new id prefix")
    status, batch = await api(
        st,
        "POST",
        "/api/jobs/batch",
        {"jobs": [{"task": "demo.count", "payload": {"n": 1, "delay": 0}}] * 30},
    )
    assert status == 201, batch
    await wait_state(st, batch["jobs"][-1]["id"], "succeeded")

    tab = await open_tab(browser, st)
    page = tab.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.goto("/")
    rows = page.locator("tbody tr[data-job-id]")
    await expect(rows).to_have_count(31)
    search = page.get_by_role("searchbox", name="Job id")
    await search.fill(target["id"][:8].upper())  # as pasted from anywhere
    await expect(page).to_have_url(re.compile(rf"/\?q={target['id'][:8]}$"))
    await expect(rows).to_have_count(1)
    row = page.locator(f'tr[data-job-id="{target["id"]}"]')
    await expect(row.locator(".job-id")).to_have_text(target["id"])  # the full id
    await expect(row.locator(".c-runtime")).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    await row.get_by_role("button", name=re.compile("^Copy")).click()
    assert await page.evaluate("navigator.clipboard.readText()") == target["id"]

    await search.fill(target["id"])  # the full id
    await expect(rows).to_have_count(1)
    await search.fill("zzzzzzzz")
    await expect(rows).to_have_count(0)
    await expect(page.locator(".empty")).to_contain_text("No jobs match")
    await search.fill("not-an-id")
    await expect(page.locator("#f-q-err")).to_be_visible()
    await expect(search).to_have_attribute("aria-invalid", "true")

    # created up to the second after the target: only the target
    await search.fill("")
    await expect(rows).to_have_count(31)
    local = await page.evaluate(
        """(ms) => {
          const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
          return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
        }""",
        second_after,
    )
    await page.get_by_label("Created to").fill(local)
    await expect(page).to_have_url(re.compile(rf"until={second_after}"))
    await expect(rows).to_have_count(1)
    await expect(row).to_be_visible()
    tab.assert_no_errors()


async def test_bulk_retry_of_500_dead_letters_with_one_confirmation(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    body = {"jobs": [{"task": "demo.fail", "payload": {}, "max_attempts": 1}] * 500}
    status, made = await api(st, "POST", "/api/jobs/batch", body)
    assert status == 201, made

    async def all_dead() -> bool:
        return bool((await queue_figures(st))["dead"] == 500)

    await eventually(all_dead, timeout=90, what="500 dead letters")
    # paused, so the retried jobs stay queued where they can be counted
    assert (await api(st, "POST", "/api/queues/default/pause"))[0] == 200

    tab = await open_tab(browser, st)
    page = tab.page
    sent: list[tuple[str, str]] = []
    page.on("request", lambda r: sent.append((r.method, r.url)))
    await page.goto("/?view=dead&queue=default")
    await expect(page.locator(".dead-item")).to_have_count(100)
    await expect(page.get_by_text("500 dead jobs in queue default")).to_be_visible()
    await page.get_by_role("button", name="Retry all 500").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Retry 500 dead letters?")
    await dialog.get_by_role("button", name="Retry 500 dead letters").click()
    await expect(page.locator("#toast")).to_contain_text(
        "500 dead letters of default queued again."
    )
    await expect(page.get_by_text("No dead jobs in queue default.")).to_be_visible()

    stats = await queue_figures(st)
    assert (stats["queued"], stats["dead"]) == (500, 0)
    jobs = [j["id"] for j in made["jobs"]]
    for jid in (jobs[0], jobs[250], jobs[-1]):
        assert (await api(st, "GET", f"/api/jobs/{jid}"))[1]["state"] == "queued"
    # one request did it (after one dry run for the confirmation), not one per job
    posts = [u for m, u in sent if m == "POST"]
    assert [re.sub(r"^https?://[^/]+", "", u) for u in posts] == [
        "/api/queues/default/dead/retry?dry_run=1",
        "/api/queues/default/dead/retry",
    ], posts

    # the list counts them too
    await page.goto("/")
    await expect(card_fig(page, "queued")).to_have_text("500")
    await expect(card_fig(page, "dead")).to_have_text("0")
    await expect(page.locator('.state-count[data-state="queued"] .n')).to_have_text("500")
    await expect(page.locator('.queue-card[data-queue="default"] .badge-paused')).to_be_visible()
    tab.assert_no_errors()


async def test_pausing_a_queue_while_workers_run(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto("/?view=queues")
    row = page.locator('tr[data-queue="default"]')
    await expect(row.locator(".c-workers")).to_have_text("1")
    long = await submit(st, "demo.count", {"n": 60, "delay": 0.1})
    await expect(row.locator(".c-running")).to_have_text("1")

    await page.get_by_role("button", name="Pause queue default").click()
    await expect(row).to_have_attribute("data-paused", "true")
    await expect(row.locator(".badge-paused")).to_be_visible()
    await expect(page.locator("#toast")).to_contain_text("Queue default paused")
    assert (await queue_figures(st))["paused"] is True
    producer = await st.producer()
    at_pause = (await producer.get(long["id"])).progress.current or 0

    # the running job goes on: by the time it made 12 more steps (1.2 s), the workers have seen
    # the pause (they look every 0.25 s); jobs submitted now must wait
    async def stepped() -> bool:
        job = await producer.get(long["id"])
        return job.state != "running" or (job.progress.current or 0) >= at_pause + 12

    await eventually(stepped, timeout=20, what="the running job to go on")
    waiting = [await submit(st, "demo.count", {"n": 2, "delay": 0.05}) for _ in range(5)]
    await wait_state(st, long["id"], "succeeded", within=20)  # running jobs finish
    for job in waiting:
        assert (await api(st, "GET", f"/api/jobs/{job['id']}"))[1]["state"] == "queued"
    await expect(row.locator(".c-queued")).to_have_text("5")
    await expect(row.locator(".c-running")).to_have_text("0")

    # the list shows it paused as well
    lst = await page.context.new_page()
    await lst.goto("/")
    await expect(lst.locator('.queue-card[data-queue="default"] .badge-paused')).to_be_visible()
    await expect(card_fig(lst, "queued")).to_have_text("5")

    await page.get_by_role("button", name="Resume queue default").click()
    await expect(row).to_have_attribute("data-paused", "false")
    for job in waiting:
        await expect(lst.locator(f'tr[data-job-id="{job["id"]}"] .badge')).to_have_text("succeeded")
    await expect(row.locator(".c-queued")).to_have_text("0")
    await expect(lst.locator('.queue-card[data-queue="default"] .badge-paused')).to_be_hidden()
    assert (await queue_figures(st))["paused"] is False
    await screenshot(page, "dashboard-queues.png")
    tab.assert_no_errors()


async def test_workers_page_lists_two_workers_and_drops_a_killed_one(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    # a short lease: a killed worker's heartbeat and jobs run out within seconds
    st = stack_factory(redis_url, TIDINGS_JOBS_LEASE_S="1.5")
    await st.start_service(**SERVICE_ENV)
    one = await st.start_workers(1)
    two = await st.start_workers(1, wait=False)
    producer = await st.producer()

    async def both() -> bool:
        return len(await producer.queries.workers()) == 2

    await eventually(both, timeout=30, what="two workers")
    job = await submit(st, "demo.count", {"n": 80, "delay": 0.1})
    running = await wait_state(st, job["id"], "running")
    first = running["worker"]

    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto("/?view=workers")
    rows = page.locator("tr[data-worker]")
    await expect(rows).to_have_count(2)
    mine = page.locator(f'tr[data-worker="{first}"]')
    await expect(mine.get_by_role("link", name=job["id"])).to_be_visible()
    await expect(mine.locator(".c-busy")).to_have_text("1 / 32")
    pid = int(first.split(":")[1])
    await expect(mine.locator(".c-pid")).to_have_text(str(pid))
    await screenshot(page, "dashboard-workers.png")

    # kill the worker running the job (no goodbye: its heartbeat and lease must run out), then
    # its supervisor before that restarts it (a restart waits a backoff)
    victim = one if pid in worker_children(one) else two
    assert pid in worker_children(victim)
    os.kill(pid, signal.SIGKILL)
    os.killpg(victim.pid, signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    await expect(rows).to_have_count(1, timeout=20_000)
    await expect(mine).to_have_count(0)
    other = await rows.first.get_attribute("data-worker")
    assert other and other != first

    # the other worker takes the job over as its next attempt; the job page names both
    async def taken_over() -> dict[str, Any] | None:
        _, j = await api(st, "GET", f"/api/jobs/{job['id']}")
        return dict(j) if j["attempt"] == 2 and j["state"] == "running" else None

    await eventually(taken_over, timeout=20, what="the job taken over")
    await expect(page.locator(f'tr[data-worker="{other}"]').get_by_role("link")).to_have_text(
        job["id"]
    )
    await page.goto(f"/jobs/{job['id']}")
    workers = page.locator(".attempt-workers li")
    await expect(workers).to_have_count(2)
    await expect(workers.nth(0)).to_have_text(f"attempt 1: {first}")
    await expect(workers.nth(1)).to_have_text(f"attempt 2: {other}")
    await expect(page.locator('tr[data-event="started"]').nth(1)).to_contain_text(
        f"attempt 2 started on {other}"
    )
    await expect(page.locator('tr[data-event="retrying"]')).to_contain_text("WorkerLost")
    tab.assert_no_errors()


async def test_queue_figures_match_the_api_under_load(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    tab = await open_tab(browser, st)
    page = tab.page
    polled: list[str] = []

    def on_request(r: Request) -> None:
        if "/api/queues" in r.url:
            polled.append(r.url)

    page.on("request", on_request)
    await page.goto("/")
    await expect(page.locator(".view-jobs .stream")).to_have_attribute("data-status", "live")
    await expect(card_fig(page, "workers")).to_have_text("1")

    stop = asyncio.Event()
    sent = 0

    async def load() -> None:
        nonlocal sent
        jobs = [
            *[{"task": "demo.count", "payload": {"n": 3, "delay": 0.05}}] * 8,
            *[{"task": "demo.fail", "payload": {}, "max_attempts": 1}] * 2,
            {"task": "demo.count", "payload": {"n": 1}, "delay_s": 600},
        ]
        while not stop.is_set():
            status, _ = await api(st, "POST", "/api/jobs/batch", {"jobs": jobs})
            assert status == 201
            sent += len(jobs)
            await asyncio.sleep(0.05)  # pacing the load, not waiting for anything

    loader = asyncio.create_task(load())
    try:
        # under load: the figures shown are fresh (computed by the service within about a
        # second, one stats tick) and never ahead of the API (dead letters only grow here)
        samples = 0
        while samples < 6:
            ui = await card_figures(page)
            after = await queue_figures(st)
            assert ui is not None
            assert ui["now"] - ui["at"] <= 2500, f"figures {ui['now'] - ui['at']} ms old"
            assert ui["dead"] <= after["dead"] and ui["scheduled"] <= after["scheduled"]
            samples += 1
            await page.wait_for_function(
                "(at) => Date.parse(document.querySelector('.queues').dataset.statsAt) > at",
                arg=ui["at"],
            )
        assert sent >= 40
    finally:
        stop.set()
        await loader

    # once it settles, the same numbers as the API
    async def settled() -> dict[str, Any] | None:
        a = await queue_figures(st)
        return a if a["queued"] == 0 and a["running"] == 0 else None

    final = await eventually(settled, timeout=60, what="the load to drain")
    for key in ("queued", "running", "scheduled", "dead", "workers"):
        await expect(card_fig(page, key)).to_have_text(str(final[key]))
    await expect(page.locator('.state-count[data-state="failed"] .n')).to_have_text(
        f"{final['dead']:,}"
    )
    assert not polled, f"the list polled the queues: {polled}"

    # the trend of that load: bars by outcome, the totals the API gives
    _, trend = await api(st, "GET", "/api/stats/trend?minutes=60")
    await page.goto("/?view=trend")
    await expect(page.locator('[data-total="failed"] dd')).to_have_text(
        f"{trend['total']['failed']:,}"
    )
    assert trend["total"]["failed"] == final["dead"] and trend["total"]["succeeded"] > 0
    await expect(page.locator("svg.chart rect.bar-failed").first).to_be_attached()
    await expect(page.locator("svg.chart circle.dot-p95").first).to_be_attached()
    await page.emulate_media(color_scheme="dark")
    await screenshot(page, "dashboard-trend-dark.png")
    tab.assert_no_errors()


async def test_a_300_step_job_page_stays_short(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = await start_stack(stack_factory, redis_url)
    job = await submit(st, "demo.count", {"n": 300, "delay": 0.01})
    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto(f"/jobs/{job['id']}")
    await expect(page.locator(".view-job .view-head .badge")).to_have_text(
        "succeeded", timeout=30_000
    )
    status, events = await api(st, "GET", f"/api/jobs/{job['id']}/events")
    assert status == 200
    progress = sum(e["event"] == "progress" for e in events)
    assert progress >= 100, progress  # the worker may coalesce some under load
    await expect(page.locator("tr[data-event-id]")).to_have_count(len(events))
    steps = page.locator('tr[data-event="progress"]')
    toggle = page.get_by_role("button", name=f"Show {progress} progress events")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await expect(page.locator("tr.fold")).to_contain_text("latest: 300 / 300 — step 300")
    assert await steps.evaluate_all("els => els.every((e) => e.offsetParent === null)")
    for kind in ("queued", "started", "succeeded"):
        await expect(page.locator(f'tr[data-event="{kind}"]')).to_be_visible()
    height = await page.evaluate("document.documentElement.scrollHeight")
    assert height <= 1500, f"the page is {height}px tall"
    await screenshot(page, "dashboard-job.png")

    await toggle.click()
    hide = page.get_by_role("button", name=f"Hide {progress} progress events")
    await expect(hide).to_have_attribute("aria-expanded", "true")
    await expect(steps.last).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollHeight") > 3 * height
    await hide.click()
    await expect(steps.first).to_be_hidden()
    assert await page.evaluate("document.documentElement.scrollHeight") <= 1500
    tab.assert_no_errors()


async def test_load_errors_and_an_empty_task_list_say_what_happened(
    browser: Browser, redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url)
    await st.start_service(TIDINGS_WORKERS_TASKS="")  # no tasks, no workers
    tab = await open_tab(browser, st)
    page = tab.page
    await page.goto("/?view=new")
    await expect(page.locator(".hint").first).to_have_text(
        re.compile("^No tasks are registered with the service")
    )

    missing = new_job_id()
    await page.goto(f"/jobs/{missing}")
    await expect(page.locator(".view-job h1")).to_have_text("Job not found")
    await expect(page.get_by_role("alert")).to_contain_text("No such job")

    async def fail(route: Any) -> None:
        await route.fulfill(
            status=500,
            content_type="application/json",
            body='{"error": {"code": "internal", "message": "internal error"}}',
        )

    await page.route(f"**/api/jobs/{missing}", fail)
    await page.goto(f"/jobs/{missing}")
    await expect(page.get_by_role("alert")).to_contain_text("internal error")
    await expect(page.locator(".view-job h1")).to_have_text("Job unavailable")
    await expect(page.get_by_role("link", name="Try again")).to_be_visible()
    tab.assert_no_errors("404", "500")
