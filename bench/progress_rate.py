"""Progress reporting under a tight loop: calls/s in the task, events that reached Redis, and the
delay until a watcher sees the final value.

    .venv/bin/python bench/progress_rate.py             # n = 1,000,000 calls, async and sync task
    .venv/bin/python bench/progress_rate.py --quick     # n = 100,000

One worker process (`python -m workers --processes 1 --tasks bench.tasks`) on a private
redis-server runs `bench.progress` (`await ctx.progress(i, total=n)` for i in 1..n) and
`bench.progress_sync` (the same from a plain `def` task, in the worker's thread pool). The task
returns its calls/s and the time.time() of its last call. A watcher in this process, subscribed
through `Producer.hub` before the job is submitted (its id is known in advance from an idempotency
key), counts the progress events and records when the one with current == n arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (  # bench/ is the script's directory
    PREFIX,
    private_redis,
    start_workers,
    sync_client,
    table,
    worker_up,
)

import bench.tasks  # noqa: F401  (registers the tasks: the producer refuses unknown ones)
from service.core.hub import FireEvent
from service.core.wire import SProgress, idempotent_job_id
from service.producer import Producer


class Watcher:
    def __init__(self, n: int) -> None:
        self.n = n
        self.events = 0
        self.progress = 0
        self.t_final: float | None = None
        self.t_first: float | None = None
        self.gaps: list[float] = []
        self._last: float | None = None
        self.last_current: float | None = None
        self.hub_gaps = 0  # the hub fell behind the firehose's trimming (events missed)

    def on_event(self, ev: FireEvent) -> None:
        now = time.time()
        self.events += 1
        if ev.type != "progress":
            return
        self.progress += 1
        if self.t_first is None:
            self.t_first = now
        if self._last is not None:
            self.gaps.append((now - self._last) * 1000)
        self._last = now
        stored = ev.stored()
        assert isinstance(stored, SProgress)
        cur = stored.current
        self.last_current = cur
        if cur == self.n and self.t_final is None:
            self.t_final = now

    def on_gap(self, partition: int) -> None:
        self.hub_gaps += 1

    def on_reset(self) -> None:
        pass


async def one(p: Producer, url: str, task: str, n: int, hold_s: float = 0.0) -> dict[str, Any]:
    r = sync_client(url)
    fire = f"{{{PREFIX}:0}}:fire"
    key = f"progress-{task}-{os.urandom(6).hex()}"
    job_id = idempotent_job_id(PREFIX, key)
    w = Watcher(n)
    await p.hub.ready()
    p.hub.subscribe(job_id, w)
    xlen0 = r.xlen(fire) if r.exists(fire) else 0
    try:
        await p.submit(task, {"n": n, "hold_s": hold_s}, idempotency_key=key)
        done = await p.wait(job_id, timeout=600)
        await asyncio.sleep(0.2)  # let the hub hand over anything still in flight
    finally:
        p.hub.unsubscribe(job_id, w)
    xlen1 = r.xlen(fire)
    r.close()
    if done.state != "succeeded":
        return {"task": task, "error": f"job {done.state}: {done.error}"}
    res = done.result
    stored = await p.events(job_id)
    latency = (w.t_final - res["t_last"]) * 1000 if w.t_final is not None else None
    gaps = sorted(w.gaps)
    return {
        "task": task,
        "n": n,
        "calls_per_s": round(res["calls_per_s"], 1),
        "elapsed_s": round(res["elapsed_s"], 3),
        "progress_events_to_redis": xlen1 - xlen0 - 3,  # firehose minus queued/started/succeeded
        "progress_events_seen": w.progress,
        "events_kept_in_job_list": sum(1 for e in stored if e.type == "progress"),
        "final_value_seen": w.last_current == n,
        "final_seen_after_last_call_ms": None if latency is None else round(latency, 2),
        "event_gap_p50_ms": round(gaps[len(gaps) // 2], 2) if gaps else None,
        "snapshot_current": done.progress.current,
        "hub_gaps": w.hub_gaps,
        "hold_s": hold_s,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="n = 100,000")
    ap.add_argument(
        "--modes",
        default="async,sync,async-hold",
        help="async, sync, async-hold (the task stays running 0.5 s after its last call)",
    )
    ap.add_argument("--redis-server", default=shutil.which("redis-server"))
    a = ap.parse_args()
    if a.quick:
        a.n = 100_000
    tasks = {
        "async": "bench.progress",
        "sync": "bench.progress_sync",
        "async-hold": "bench.progress",
    }
    out: dict[str, Any] = {"bench": "progress_rate", "n": a.n, "runs": []}
    tmpdir = tempfile.TemporaryDirectory(prefix="tidings-bench-")
    with private_redis(a.redis_server) as server, tmpdir as tmp:
        url = server.url
        w = start_workers(url, 1, Path(tmp))
        try:
            async with Producer.from_url(url, prefix=PREFIX) as p:
                await worker_up(p, w)
                for mode in a.modes.split(","):
                    hold = 0.5 if mode.endswith("-hold") else 0.0
                    res = await one(p, url, tasks[mode], a.n, hold)
                    out["runs"].append(res)
                    if "error" in res:
                        print(f"{mode}: {res['error']}", flush=True)
                        continue
                    lat = res["final_seen_after_last_call_ms"]
                    print(
                        table(
                            [
                                ("calls/s in the task", f"{res['calls_per_s']:,.0f}"),
                                ("task run time", f"{res['elapsed_s']} s"),
                                ("progress events written", f"{res['progress_events_to_redis']:,}"),
                                ("progress events seen", f"{res['progress_events_seen']:,}"),
                                ("median gap between events", f"{res['event_gap_p50_ms']} ms"),
                                ("final value seen", str(res["final_value_seen"])),
                                ("last call -> watcher", "never" if lat is None else f"{lat} ms"),
                            ],
                            f"Progress, {mode} task, n={a.n:,} (`{tasks[mode]}`)",
                        )
                        + "\n",
                        flush=True,
                    )
        finally:
            w.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
