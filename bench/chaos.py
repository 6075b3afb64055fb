"""Chaos: N jobs under repeated worker kills and one Redis kill-and-restart, then a Jepsen-style
queue check: lost, duplicated (ran more than once), unexpected, recovered.

    .venv/bin/python bench/chaos.py [--n 2000] [--kill-every 1.5] [--work-ms 200]

Redis runs with AOF `appendfsync always`; workers with a 2 s lease. Every run of a task is
recorded (HINCRBY on a key outside Tidings' keys) so duplicates are counted from what actually
ran, not from what Tidings reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Proc, env_for
from service.core.embedded import ServerProcess
from service.core.states import TERMINAL
from service.producer import Producer

RUNS = "chaos:runs"  # hash job id -> number of times the task body started


def consumer_pending(r_info: list[dict[bytes, object]], pid: int) -> int:
    for c in r_info:
        name = c[b"name"] if b"name" in c else c.get("name")  # type: ignore[call-overload]
        text = name.decode() if isinstance(name, bytes) else str(name)
        if f":{pid}:" in text:
            return int(c.get(b"pending", c.get("pending", 0)))  # type: ignore[call-overload]
    return 0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--kill-every", type=float, default=1.5)
    ap.add_argument("--kills", type=int, default=8, help="worker kills (each while it holds jobs)")
    ap.add_argument("--work-ms", type=int, default=200)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=300)
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="tidings-chaos-"))
    server = ServerProcess(tmp / "redis", binary=binary, persistent=True, fsync="always")
    server.start()
    env = env_for(server.url, TIDINGS_JOBS_LEASE_S="2", TIDINGS_WORKERS_GRACE_S="1")
    argv = [
        sys.executable,
        "-m",
        "workers",
        "--tasks",
        "bench.tasks",
        "--processes",
        str(args.processes),
    ]
    workers = Proc(argv, env, tmp / "workers.log", cwd=ROOT)
    p = Producer.from_url(server.url, prefix="bench")
    kills: list[float] = []
    in_flight_at_kills: list[int] = []
    redis_restarted_at = 0.0
    try:
        jobs = await p.submit_many([("chaos.work", {"ms": args.work_ms}) for _ in range(args.n)])
        accepted = {j.id for j in jobs}
        t0 = time.monotonic()
        next_kill = t0 + args.kill_every
        restart_at = t0 + 4 * args.kill_every
        while time.monotonic() - t0 < args.deadline:
            now = time.monotonic()
            try:
                q = (await p.queues()).get("default")
            except Exception:
                q = None
            if q is not None and q.queued + q.running + q.scheduled == 0:
                break
            if not redis_restarted_at and now >= restart_at:
                server.kill()
                await asyncio.sleep(0.5)
                server.start()
                redis_restarted_at = time.time()
                print(f"  redis killed and restarted at t={now - t0:.1f}s", flush=True)
            elif now >= next_kill and len(kills) < args.kills:
                kids = workers.children(want=1, timeout=2)
                try:
                    info = await p.redis.xinfo_consumers(p.keys.queue(0, "default"), "tidings")
                except Exception:
                    info = []
                busy = [(consumer_pending(info, k), k) for k in kids]
                busy = [(n, k) for n, k in busy if n > 0]
                if busy:
                    n_in_flight, victim = random.choice(busy)
                    in_flight_at_kills.append(n_in_flight)
                    os.kill(victim, signal.SIGKILL)
                    kills.append(time.time())
                    at = now - t0
                    print(
                        f"  killed {victim} at t={at:.1f}s (in flight: {n_in_flight})", flush=True
                    )
                next_kill = now + args.kill_every
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - t0
        runs = {k.decode(): int(v) for k, v in (await p.redis.hgetall(RUNS)).items()}
        lost, unexpected, duplicated, recovered = [], [], [], []
        longest_wait = 0.0
        for jid in accepted:
            try:
                job = await p.get(jid)
            except Exception:
                lost.append(jid)
                continue
            events = await p.events(jid)
            terminals = [e for e in events if e.type in TERMINAL]
            if job.state != "succeeded" or len(terminals) != 1:
                (lost if job.state != "succeeded" else unexpected).append(jid)
            if runs.get(jid, 0) > 1:
                duplicated.append(jid)
            if job.attempt > 1 and job.state == "succeeded":
                recovered.append(jid)
            for e in events:
                if e.type == "retrying" and b"WorkerLost" in e.data:
                    ts = e.key[0] / 1000
                    before = [k for k in kills if k <= ts]
                    if before:
                        longest_wait = max(longest_wait, ts - before[-1])
        unexpected += [j for j in runs if j not in accepted]
        result = {
            "jobs": args.n,
            "seconds": round(elapsed, 1),
            "worker_kills": len(kills),
            "redis_restarts": 1 if redis_restarted_at else 0,
            "in_flight_at_kills": in_flight_at_kills,
            "lost": len(lost),
            "duplicated": len(duplicated),
            "unexpected": len(unexpected),
            "recovered": len(recovered),
            "longest_reclaim_wait_s": round(longest_wait, 2),
        }
        print()
        print(f"  jobs                 {args.n}")
        print(f"  worker kills         {len(kills)} (jobs in flight at each: {in_flight_at_kills})")
        print(f"  redis restarts       {result['redis_restarts']} (appendfsync always)")
        print(f"  lost                 {len(lost)}")
        flight = sum(max(0, x) for x in in_flight_at_kills)
        dup = len(duplicated)
        print(f"  duplicated           {dup}  (ran more than once; in flight at kills: {flight})")
        print(f"  unexpected           {len(unexpected)}")
        print(f"  recovered            {len(recovered)}  (succeeded on a later attempt)")
        print(f"  longest reclaim wait {longest_wait:.2f} s  (lease 2 s)")
        print(json.dumps(result))
    finally:
        await p.close()
        workers.stop()
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
