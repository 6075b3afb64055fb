"""Crash safety against real processes: killed and frozen workers, poison jobs, timeouts,
cancellation, shutdown with jobs in flight, retries, and a Redis restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from service.core import wire
from service.core.embedded import ServerProcess
from service.core.states import TERMINAL
from service.core.wire import StoredEvent as Event
from service.producer import Producer
from tests import servers
from tests.conftest import DEFAULT_KIND
from tests.helpers import Stack, eventually, worker_children

pytestmark = pytest.mark.e2e
FAST = {
    "TIDINGS_JOBS_LEASE_S": "2",
    "TIDINGS_JOBS_BACKOFF_BASE_S": "0.05",
    "TIDINGS_WORKERS_POLL_S": "0.1",
}


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def data(e: Event) -> dict[str, object]:
    """The event as SSE clients get it."""
    d: dict[str, object] = json.loads(
        wire.encode_public(wire.public("j", "t", "q", e.id, e.decode()))
    )
    return d


def marker_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def wait_state(p: Producer, job_id: str, state: str, timeout: float = 20) -> None:
    async def check() -> bool:
        return (await p.get(job_id)).state == state

    await eventually(check, timeout=timeout, what=f"job {job_id} {state}")


def one_terminal(events: list[Event]) -> None:
    assert sum(e.type in TERMINAL for e in events) == 1, types(events)
    assert events[-1].type in TERMINAL


async def test_killed_worker_job_taken_over_as_next_attempt(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    st = stack_factory(redis_url, **FAST)
    sup = await st.start_workers(1)
    p = await st.producer()
    marker = tmp_path / "m"
    job = await p.submit("t.marked", {"marker": str(marker), "seconds": 1.0})
    await eventually(lambda: asyncio.sleep(0, marker_lines(marker)), what="first run")
    victim = int(marker_lines(marker)[0][2])
    assert victim in worker_children(sup)
    os.kill(victim, signal.SIGKILL)
    done = await p.wait(job.id, timeout=30)
    assert done.state == "succeeded" and done.attempt == 2 and done.result == 2
    events = await p.events(job.id)
    assert types(events) == ["queued", "started", "retrying", "started", "succeeded"]
    assert "lease expired" in str(data(events[2])["error"])
    one_terminal(events)
    assert [line[1] for line in marker_lines(marker)] == ["1", "2"]


async def test_frozen_worker_is_fenced_after_takeover(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    st = stack_factory(redis_url, **FAST)
    a = await st.start_workers(1)
    p = await st.producer()
    marker = tmp_path / "m"
    job = await p.submit("t.marked", {"marker": str(marker), "seconds": 3.0}, max_attempts=3)
    await eventually(lambda: asyncio.sleep(0, marker_lines(marker)), what="first run")
    zombie = int(marker_lines(marker)[0][2])
    os.kill(zombie, signal.SIGSTOP)
    try:
        b = await st.start_workers(1, wait=False)
        await eventually(
            lambda: asyncio.sleep(0, len(marker_lines(marker)) >= 2), timeout=30, what="takeover"
        )
        assert int(marker_lines(marker)[1][2]) in worker_children(b)
    finally:
        os.kill(zombie, signal.SIGCONT)
    done = await p.wait(job.id, timeout=30)
    assert done.state == "succeeded" and done.result == 2
    # the zombie woke up inside its task (it had 3 s to go): it learns it lost the job and
    # writes nothing
    await eventually(
        lambda: asyncio.sleep(0, "job.lost" in st.log("workers-0")),
        timeout=15,
        what="zombie fenced",
    )
    events = await p.events(job.id)
    one_terminal(events)
    second_start = max(i for i, e in enumerate(events) if e.type == "started")
    assert all(data(e)["attempt"] == 2 for e in events[second_start:])
    assert a.poll() is None


async def test_poison_job_lands_in_dead_letters(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_workers(1)
    p = await st.producer()
    marker = tmp_path / "m"
    job = await p.submit("t.marked", {"marker": str(marker), "crash_first": 99}, max_attempts=2)
    done = await p.wait(job.id, timeout=40)
    assert done.state == "failed"
    assert done.error["type"] == "WorkerLost"
    assert len(marker_lines(marker)) == 2  # crashed its worker twice, then stopped
    assert [j.id for j in await p.queries.dead("default")] == [job.id]
    one_terminal(await p.events(job.id))


@pytest.mark.parametrize("task", ["t.sleep", "t.sync_sleep"])
async def test_timeout_fails_the_attempt_with_a_timeout_error(
    redis_url: str, stack_factory: Callable[..., Stack], task: str
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_workers(1)
    p = await st.producer()
    job = await p.submit(task, {"seconds": 30}, timeout_s=0.5, max_attempts=2)
    done = await p.wait(job.id, timeout=20)
    assert done.state == "failed" and done.attempt == 2
    assert "timeout" in done.error["message"]
    assert types(await p.events(job.id)).count("retrying") == 1


async def test_cancel_queued_scheduled_running_and_finished(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_service()
    p = await st.producer()
    marker = tmp_path / "m"
    async with aiohttp.ClientSession() as s:

        async def cancel(job_id: str) -> int:
            async with s.post(f"{st.http}/api/jobs/{job_id}/cancel") as r:
                return r.status

        queued = await p.submit("t.marked", {"marker": str(marker)})
        scheduled = await p.submit("t.marked", {"marker": str(marker)}, delay_s=60)
        assert (await p.get(scheduled.id)).state == "scheduled"
        assert await cancel(queued.id) == 200
        assert await cancel(scheduled.id) == 200
        assert (await p.get(queued.id)).state == "cancelled"
        assert (await p.get(scheduled.id)).state == "cancelled"
        assert await cancel(queued.id) == 409
        await st.start_workers(1)
        running = await p.submit("t.sleep", {"seconds": 30})
        sync_running = await p.submit("t.sync_sleep", {"seconds": 30})
        await wait_state(p, running.id, "running")
        await wait_state(p, sync_running.id, "running")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await cancel(running.id) == 202
        assert await cancel(sync_running.id) == 202
        await wait_state(p, running.id, "cancelled", timeout=5)
        await wait_state(p, sync_running.id, "cancelled", timeout=5)
        assert loop.time() - t0 < 3.0
        for j in (queued, scheduled, running, sync_running):
            one_terminal(await p.events(j.id))
        # the cancelled queued job never ran
        assert marker_lines(marker) == []
        # cancelled jobs can be retried
        async with s.post(f"{st.http}/api/jobs/{queued.id}/retry") as r:
            assert r.status == 200
        assert (await p.wait(queued.id, timeout=10)).state == "succeeded"
        async with s.post(f"{st.http}/api/jobs/{queued.id}/retry") as r:
            assert r.status == 409


async def test_sigterm_hands_running_jobs_back_at_once(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    # a long lease: the job must come back by hand-back, not by lease expiry
    st = stack_factory(redis_url, TIDINGS_JOBS_LEASE_S="60", TIDINGS_WORKERS_GRACE_S="0.3")
    a = await st.start_workers(1)
    p = await st.producer()
    marker = tmp_path / "m"
    quick = await p.submit("t.marked", {"marker": str(marker), "seconds": 0.1})
    slow = await p.submit("t.marked", {"marker": str(marker), "seconds": 8})
    await eventually(lambda: asyncio.sleep(0, len(marker_lines(marker)) >= 2), what="both started")
    name_before = {w.name for w in await p.queries.workers()}
    a.send_signal(signal.SIGTERM)
    assert (await p.wait(quick.id, timeout=5)).state == "succeeded"  # finished within the grace
    await wait_state(p, slow.id, "queued", timeout=10)
    assert a.wait(15) == 0
    b = await st.start_workers(1)
    done = await p.wait(slow.id, timeout=20)
    assert done.state == "succeeded" and done.attempt == 1  # a hand-back is not a failed attempt
    assert int(marker_lines(marker)[-1][2]) in worker_children(b)
    # the stopped consumer left its group
    consumers = await p.redis.xinfo_consumers(p.keys.queue(0, "default"), "tidings")
    names = {c["name"].decode() for c in consumers}
    assert not (names & name_before)


async def test_retries_with_backoff_then_dead_letter_and_retry(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_workers(1)
    p = await st.producer()
    flaky = await p.submit("t.fail", {"succeed_on": 3})
    done = await p.wait(flaky.id, timeout=20)
    assert done.state == "succeeded" and done.attempt == 3 and done.result == "ok"
    ev = await p.events(flaky.id)
    assert types(ev).count("retrying") == 2 and types(ev).count("started") == 3
    retrying = [data(e) for e in ev if e.type == "retrying"]
    assert all(r["error"]["type"] == "ValueError" and "due" in r for r in retrying)  # type: ignore[index]
    doomed = await p.submit("t.fail", {"message": "nope"}, max_attempts=2)
    done = await p.wait(doomed.id, timeout=20)
    assert done.state == "failed" and done.error["message"] == "nope"
    assert "Traceback" in done.error["traceback"]
    assert doomed.id in [j.id for j in await p.queries.dead("default")]
    assert (await p.queues())["default"].dead == 1
    await p.retry(doomed.id)
    assert doomed.id not in [j.id for j in await p.queries.dead("default")]
    # it runs again from attempt 1 and, failing again, goes back to the dead letters
    redone = await p.wait(doomed.id, timeout=20)
    assert redone.state == "failed" and redone.attempt == 2
    after = types(await p.events(doomed.id))
    first_fail = after.index("failed")
    assert after[first_fail + 1 : first_fail + 3] == ["queued", "started"]
    assert after.count("failed") == 2
    assert doomed.id in [j.id for j in await p.queries.dead("default")]


async def test_delayed_job_waits_then_runs(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_workers(1)
    p = await st.producer()
    job = await p.submit("t.noop", {}, delay_s=1.0)
    assert job.state == "scheduled"
    assert (await p.queues())["default"].scheduled == 1
    done = await p.wait(job.id, timeout=10)
    assert done.state == "succeeded"
    ev = await p.events(job.id)
    assert types(ev) == ["scheduled", "queued", "started", "succeeded"]
    assert ev[1].key[0] - ev[0].key[0] >= 1000  # promoted no earlier than due (Redis clock)


async def test_loop_hogging_task_keeps_its_lease(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url, **FAST)
    await st.start_workers(2)
    p = await st.producer()
    job = await p.submit("t.hog", {"seconds": 5})  # 2.5 leases without yielding once
    done = await p.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.attempt == 1


async def test_redis_killed_and_restarted_loses_nothing(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    server = ServerProcess(
        tmp_path / "redis", binary=servers.binary(DEFAULT_KIND), persistent=True, fsync="always"
    )
    server.start()
    try:
        st = stack_factory(server.url, **FAST)
        await st.start_service()
        await st.start_workers(2)
        p = await st.producer()
        jobs = await p.submit_many([("t.steps", {"n": 3, "delay": 0.02}) for _ in range(300)])

        async def some_done() -> bool:
            return (await p.queues())["default"].queued < 250

        await eventually(some_done, what="drain under way")
        server.kill()
        async with aiohttp.ClientSession() as s:
            async with s.post(st.http + "/api/jobs", json={"task": "t.noop", "payload": {}}) as r:
                assert r.status == 503 and "Retry-After" in r.headers
            async with s.get(st.http + "/readyz") as r:
                assert r.status == 503
        server.start()
        for j in jobs:
            done = await p.wait(j.id, timeout=60)
            assert done.state == "succeeded", done
        for j in jobs:
            one_terminal(await p.events(j.id))
    finally:
        server.kill()


async def test_workers_stop_on_sigterm_while_redis_is_down(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    server = ServerProcess(
        tmp_path / "redis", binary=servers.binary(DEFAULT_KIND), persistent=False
    )
    server.start()
    try:
        st = stack_factory(server.url, TIDINGS_WORKERS_GRACE_S="0.5")
        sup = await st.start_workers(2)
        kids = worker_children(sup)
        server.kill()
        sup.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rc = await loop.run_in_executor(None, sup.wait, 30)
        assert rc == 0 and loop.time() - t0 < 20
        for pid in kids:  # no orphans
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        server.kill()
