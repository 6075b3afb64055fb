"""The promises at the edges, tried against real processes: a service process frozen past the
firehose trim, a worker frozen between fetching an entry and starting it, Redis frozen past the
socket timeout under load, Redis out of memory or busy, Redis restarted without its data, a
flood of queue names, and a worker loop that dies anyway.

Each test reproduces a fault that once broke a promise (issue 14), and checks what a user sees:
every event or an honest `snapshot`, streams that end, `Producer.wait` that returns, jobs that are
neither lost nor wrongly failed, and HTTP answers that are 201 or 503, never 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from service.core.states import TERMINAL
from service.core.wire import StoredEvent
from service.producer import Producer
from tests.follower import MARK
from tests.helpers import ROOT, Stack, base_env, eventually, read_sse

pytestmark = pytest.mark.e2e
FAST = {
    "TIDINGS_JOBS_LEASE_S": "2",
    "TIDINGS_JOBS_BACKOFF_BASE_S": "0.05",
    "TIDINGS_WORKERS_POLL_S": "0.1",
}


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """SIGSTOP the processes for the block (a GC pause, a starved CPU, a paused VM)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def one_terminal(events: list[StoredEvent]) -> None:
    types = [e.type for e in events]
    assert sum(t in TERMINAL for t in types) == 1 and types[-1] in TERMINAL, types


async def fire_head_n(p: Producer) -> int:
    """The event counter of the partition's newest firehose entry."""
    rows = await p.redis.xrevrange(p.keys.fire(0), count=1)
    return int(rows[0][1][b"n"]) if rows else 0


async def fire_first_n(p: Producer) -> int:
    rows = await p.redis.xrange(p.keys.fire(0), count=1)
    return int(rows[0][1][b"n"]) if rows else 0


def follower_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(x[len(MARK) :]) for x in lines if x.startswith(MARK)]


def start_follower(st: Stack, job_id: str, out: Path) -> subprocess.Popen[bytes]:
    """`Producer.watch` + `Producer.wait` on `job_id`, in a process of their own."""
    with open(out, "wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.follower", st.url, st.prefix, job_id, "90"],
            env=base_env(st.url, st.prefix),
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def drained(p: Producer, queue: str = "default") -> bool:
    q = (await p.queues()).get(queue)
    return q is not None and q.queued + q.running + q.scheduled == 0


# -- 1. a service process (and a producer) frozen past the firehose trim ------------------------


async def test_hub_frozen_past_the_firehose_trim_resyncs_every_watcher(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """The hub of a frozen process wakes with its cursor trimmed out of the firehose. A per-job
    watcher connected throughout must still get every event of its job (the terminal one fell
    in the trimmed part) and end; `Producer.watch` and `Producer.wait` in a process frozen the
    same way must end too; a firehose watcher must be told with a `snapshot` (reason "gap")."""
    st = stack_factory(redis_url, TIDINGS_JOBS_FIREHOSE_MAXLEN="100", **FAST)
    await st.start_service()
    await st.start_workers(1)
    p = await st.producer()
    # long enough to go on writing after the flood, so its events straddle the trimmed part
    job = await p.submit("t.steps", {"n": 40, "delay": 0.15})
    out = tmp_path / "follower.jsonl"
    follower = start_follower(st, job.id, out)
    assert st.service is not None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.get(f"{st.http}/api/jobs/{job.id}/events") as per_job,
            s.get(f"{st.http}/api/events") as fire,
        ):
            assert per_job.status == 200 and fire.status == 200
            before = await read_sse(per_job, until=lambda ev: ev[-1].event == "progress")
            await read_sse(fire, until=lambda ev: len(ev) >= 1)
            await eventually(
                lambda: asyncio.sleep(0, len(follower_lines(out)) >= 3), what="follower watching"
            )
            head = await fire_head_n(p)
            with frozen(st.service.pid, follower.pid):
                await p.submit_many([("t.noop", {}) for _ in range(600)])
                await eventually(lambda: drained(p), timeout=60, what="noops done")
                assert (await p.get(job.id)).state == "succeeded"
                # the hubs' cursors (at most `head`) are no longer in the stream
                assert await fire_first_n(p) > head + 1, "firehose not trimmed past the cursor"
            after = await read_sse(per_job, timeout=30)  # to the end of the stream
            stored = await p.events(job.id)
            got = before + after
            assert [e.event for e in got] == [e.type for e in stored]
            assert [e.id for e in got] == [e.id.decode() for e in stored], "gap or duplicate"
            # the firehose client is told it missed events, then gets live ones
            late = await p.submit("t.noop", {})
            seen = await read_sse(
                fire,
                until=lambda ev: any(late.id in e.data and e.event == "succeeded" for e in ev),
                timeout=30,
            )
            snaps = [e for e in seen if e.event == "snapshot"]
            assert snaps and json.loads(snaps[0].data).get("reason") == "gap", [
                e.event for e in seen[:5]
            ]
        rc = await asyncio.get_running_loop().run_in_executor(None, follower.wait, 60)
        lines = follower_lines(out)
        assert rc == 0, lines[-3:]
        assert lines[-1] == {"wait": "succeeded"}
        assert [x["id"] for x in lines[:-1]] == [e.id.decode() for e in stored], "watch gap"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
