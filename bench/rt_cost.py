"""CPU cost of one round trip (submit, then wait until done), per process, for any checkout.

    .venv/bin/python bench/rt_cost.py [--n 1000] [--cprofile FILE]
    cd <an older checkout> && <this checkout>/.venv/bin/python <this checkout>/bench/rt_cost.py

It uses the `bench/common.py` and the code of the checkout it is run FROM (the current
directory): `<cwd>/bench` goes first on sys.path, and that `common.py` puts its checkout first,
so an exported older commit is measured with its own code (only `Producer.from_url`, `submit`,
`wait` and `bench/common.py` are used: the same on every commit that has `bench/`).

One worker process on a private redis-server; 50 warm-up round trips, then N sequential ones.
Printed per round trip: wall p50, the CPU of this (producer) process (`process_time`), of the
worker process (/proc utime + stime), of Redis (INFO used_cpu_*), Redis commands
(total_commands_processed) and the commandstats. `--cprofile FILE`: the timed loop runs under
cProfile (then the CPU figures include the profiler), stats written to FILE and the top
functions by own time printed. One JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.getcwd(), "bench"))
import common

import bench.tasks  # noqa: F401  (registers bench.noop, as an application would)
from service.producer import Producer


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cprofile", type=Path)
    a = ap.parse_args()
    n = a.n
    with common.private_redis() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        r = common.sync_client(url)
        w = common.start_workers(url, 1, Path(tmp))
        prof = cProfile.Profile() if a.cprofile else None
        try:
            kids = w.children(want=1)
            async with Producer.from_url(url, prefix=common.PREFIX) as p:
                await common.worker_up(p, w)
                for _ in range(50):
                    job = await p.submit("bench.noop", {})
                    await p.wait(job.id, timeout=30)
                await asyncio.sleep(0.5)
                before = common.snapshot(r)
                wc0 = sum(common.cpu_seconds(k) for k in kids)
                c0 = time.process_time()
                lat = []
                if prof is not None:
                    prof.enable()
                for _ in range(n):
                    t = time.perf_counter()
                    job = await p.submit("bench.noop", {})
                    await p.wait(job.id, timeout=30)
                    lat.append((time.perf_counter() - t) * 1000)
                if prof is not None:
                    prof.disable()
                c1 = time.process_time()
                wc1 = sum(common.cpu_seconds(k) for k in kids)
                after = common.snapshot(r)
        finally:
            w.stop()
            r.close()
    d = common.diff(before, after, n, top=20)
    out = {
        "bench": "rt_cost",
        "root": str(common.ROOT),
        "n": n,
        "p50_ms": round(common.pct(lat, 0.5), 3),
        "producer_cpu_us": round((c1 - c0) * 1e6 / n, 1),
        "worker_cpu_us": round((wc1 - wc0) * 1e6 / n, 1),
        "redis_cpu_us": round(d["redis_cpu_us_per_job"], 1),
        "cmds": round(d["cmds_per_job"], 2),
        "top": d["top"],
        "loadavg": round(os.getloadavg()[0], 2),
        "cprofile": prof is not None,
    }
    print(
        common.table(
            [
                ("checkout", out["root"]),
                ("wall p50", f"{out['p50_ms']} ms"),
                ("producer CPU", f"{out['producer_cpu_us']} µs"),
                ("worker CPU", f"{out['worker_cpu_us']} µs"),
                ("Redis CPU", f"{out['redis_cpu_us']} µs"),
                ("Redis commands", str(out["cmds"])),
                ("load average", str(out["loadavg"])),
            ],
            f"One round trip (n={n}, 1 worker process), per round trip",
        )
    )
    if prof is not None and a.cprofile:
        prof.dump_stats(a.cprofile)
        print(f"\ncProfile of the timed loop (top 25 by own time), stats in {a.cprofile}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
