"""Redis memory under a steady load: does it stay flat once retention kicks in?

    .venv/bin/python bench/memory_steady.py [--rate 500] [--seconds 90] [--retention 20]

Submits `--rate` no-op jobs per second for `--seconds` against 2 workers, with
`jobs.retention_s = --retention`, and prints Redis `used_memory` every 5 s. Finished jobs expire
after the retention, the queue stream holds only unfinished work and the firehose is capped, so
memory should rise for about one retention period and then stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.tasks  # noqa: F401  (registers bench.noop: the producer refuses unknown tasks)
from bench.common import ROOT, Proc, env_for, private_redis
from service.producer import Producer


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--retention", type=float, default=20)
    args = ap.parse_args()
    with private_redis() as server:
        env = env_for(
            server.url,
            TIDINGS_JOBS_RETENTION_S=str(args.retention),
            TIDINGS_JOBS_FIREHOSE_MAXLEN="10000",
        )
        argv = [sys.executable, "-m", "workers", "--tasks", "bench.tasks", "--processes", "2"]
        workers = Proc(argv, env, Path("/tmp/tidings-memory-workers.log"), cwd=ROOT)
        p = Producer.from_url(server.url, prefix="bench")
        samples: list[tuple[float, int, int]] = []
        try:
            t0 = time.monotonic()
            next_sample = t0
            sent = 0
            while time.monotonic() - t0 < args.seconds:
                now = time.monotonic()
                due = int((now - t0) * args.rate) - sent
                if due > 0:
                    await p.submit_many([("bench.noop", {})] * due)
                    sent += due
                if now >= next_sample:
                    info = await p.redis.info("memory")
                    keys = await p.redis.dbsize()
                    samples.append((now - t0, int(info["used_memory"]), int(keys)))
                    mb = samples[-1][1] / 1e6
                    print(
                        f"  t={now - t0:5.1f}s  used_memory={mb:7.2f} MB  keys={keys}", flush=True
                    )
                    next_sample += 5
                await asyncio.sleep(0.01)
        finally:
            await p.close()
            workers.stop()
    settled = [m for t, m, _ in samples if t >= args.retention + 10]
    if settled:
        growth = (settled[-1] - settled[0]) / max(1, settled[0])
        lo, hi = min(settled) / 1e6, max(settled) / 1e6
        print(f"\n  after one retention: {lo:.2f}-{hi:.2f} MB, first to last {growth:+.1%}")
    print(json.dumps({"rate": args.rate, "retention_s": args.retention, "samples": samples}))


if __name__ == "__main__":
    asyncio.run(main())
