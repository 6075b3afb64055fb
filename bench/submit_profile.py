"""Where the time of one `Producer.submit` goes: client-side µs per call, piece by piece.

    .venv/bin/python bench/submit_profile.py                 # n = 20,000 per step
    .venv/bin/python bench/submit_profile.py --n 5000 --cprofile /tmp/submit.prof

On a private redis-server (no worker), in this one process, each step is run n times in a
loop after 500 warm-ups, and timed with perf_counter (wall) and process_time (this process's
CPU); the steps are interleaved in rounds (--rounds, default 3) and the median round is kept:

  prepare        `Producer._prepare` (validation, payload conversion, id, JSON encoding)
  build          `Ops.submit(k, [new])`: the Call (keys, arguments)
  pack           redis-py packing the EVALSHA command (`Connection.pack_command`)
  ping           `await r.ping()`: one round trip through redis-py (the floor of any command)
  raw_rtt        a pre-packed EVALSHA of the submit script written on a plain asyncio socket,
                 reply read raw (no redis-py): network + Redis, no client machinery
  evalsha        `await r.evalsha(*call.command())` with a pre-built Call
  call_run       `await call.run(r)` (reply decoded into SubmitRow)
  durable_run    `await producer.durability.run(call)` (the retry wrapper around call.run)
                 (these four submit new jobs each time, their Calls built ahead, untimed)
  admit          `await producer._admit({"default"})` (queue registry cache, max_queued)
  submit         `await producer.submit("bench.noop", {})`, the whole call

Redis's own time: `INFO commandstats` before and after the `submit` step (µs per EVALSHA
and per command run inside it). `--cprofile FILE` also runs the `submit` loop under cProfile
and prints the top functions by own time (cProfile inflates Python-heavy code; read its
shares, not its absolute times).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import PREFIX, private_redis, snapshot, sync_client, table

import bench.tasks  # noqa: F401  (registers bench.noop, as an application would)
from service.producer import Producer, SubmitRequest

Step = Callable[[], Awaitable[Any]]


async def timed(fn: Step, n: int) -> tuple[float, float]:
    """µs per call: wall, CPU of this process."""
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) * 1e6 / n, (time.process_time() - c0) * 1e6 / n


class RawConn:
    """A pre-packed command on a plain asyncio stream; reads one reply (a bulk string)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def roundtrip(self, packed: bytes) -> None:
        self.writer.write(packed)
        head = await self.reader.readline()
        if head[:1] == b"$":
            await self.reader.readexactly(int(head[1:]) + 2)
        elif head[:1] == b"-":
            raise RuntimeError(head.decode())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cprofile", help="also profile the submit loop, stats written here")
    ap.add_argument("--redis-server", default=shutil.which("redis-server"))
    a = ap.parse_args()
    n = a.n
    out: dict[str, Any] = {"bench": "submit_profile", "n": n}
    with private_redis(a.redis_server) as server:
        url = server.url
        sr = sync_client(url)
        async with Producer.from_url(url, prefix=PREFIX) as p:
            r = p.redis
            req = SubmitRequest(task="bench.noop", payload={})
            for _ in range(500):
                await p.submit("bench.noop", {})
            new = await p._prepare(req)
            k = p.keys.partition(new.id)
            call = p.ops.submit(k, [new])
            cmd = ["EVALSHA", *call.command()]
            conn = await r.connection_pool.get_connection()
            await r.connection_pool.release(conn)
            rd, wr = await asyncio.open_connection("127.0.0.1", server.port)
            raw = RawConn(rd, wr)
            fresh: list[Any] = []  # Calls of new jobs, prepared ahead (untimed)

            async def refill(m: int) -> None:
                fresh.clear()
                for _ in range(m):
                    j = await p._prepare(req)
                    fresh.append(p.ops.submit(p.keys.partition(j.id), [j]))

            def packed_of(c: Any) -> bytes:
                return b"".join(conn.pack_command("EVALSHA", *c.command()))

            # raw_rtt, evalsha, call_run and durable_run each submit new jobs (Calls built
            # ahead), so Redis does what a real submit does
            async def prepare() -> Any:
                return await p._prepare(req)

            async def build() -> Any:
                return p.ops.submit(k, [new])

            async def pack() -> Any:
                return conn.pack_command(*cmd)

            steps: dict[str, Step] = {
                "prepare": prepare,
                "build": build,
                "pack": pack,
                "ping": r.ping,
                "raw_rtt": lambda: raw.roundtrip(fresh_packed.pop()),
                "evalsha": lambda: r.evalsha(*fresh.pop().command()),
                "call_run": lambda: fresh.pop().run(r),
                "durable_run": lambda: p.durability.run(fresh.pop()),
                "admit": lambda: p._admit({"default"}),
                "submit": lambda: p.submit("bench.noop", {}),
            }
            rounds: dict[str, list[tuple[float, float]]] = {s: [] for s in steps}
            redis_side: list[dict[str, Any]] = []
            fresh_packed: list[bytes] = []
            uses_fresh = ("raw_rtt", "evalsha", "call_run", "durable_run")
            for _ in range(a.rounds):
                for name, fn in steps.items():
                    warm = min(n, 500)
                    if name in uses_fresh:
                        await refill(n + warm)
                        fresh_packed[:] = [packed_of(c) for c in fresh]
                    await timed(fn, warm)  # warm-up of this step
                    if name == "submit":
                        before = snapshot(sr)
                    rounds[name].append(await timed(fn, n))
                    if name == "submit":
                        after = snapshot(sr)
                        redis_side.append(_redis_side(before, after, n))
            wr.close()
            med = {
                s: {
                    "wall_us": round(statistics.median(w for w, _ in v), 2),
                    "cpu_us": round(statistics.median(c for _, c in v), 2),
                    "wall_min_max": [
                        round(min(w for w, _ in v), 2),
                        round(max(w for w, _ in v), 2),
                    ],
                }
                for s, v in rounds.items()
            }
            out["steps"] = med
            out["redis"] = redis_side[len(redis_side) // 2]
            rows = [
                (
                    s,
                    f"{m['wall_us']:8.1f} µs wall ({m['wall_min_max'][0]:.1f}-"
                    f"{m['wall_min_max'][1]:.1f}), {m['cpu_us']:8.1f} µs CPU here",
                )
                for s, m in med.items()
            ]
            rs = out["redis"]
            rows.append(
                (
                    "Redis, per submit",
                    f"EVALSHA {rs['evalsha_us_per_call']} µs (commands inside: "
                    + ", ".join(f"{c} {u}" for c, u in rs["inside_us_per_submit"].items())
                    + f"); Redis CPU {rs['redis_cpu_us_per_submit']} µs",
                )
            )
            print(table(rows, f"Producer.submit, piece by piece (n={n}, median of {a.rounds})"))
            if a.cprofile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(n):
                    await p.submit("bench.noop", {})
                prof.disable()
                prof.dump_stats(a.cprofile)
                print(f"\ncProfile of {n} submits (top 25 by own time), stats in {a.cprofile}")
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        sr.close()
    print(json.dumps(out), flush=True)


def _redis_side(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    def delta(cmd: str) -> tuple[int, int]:
        a = after["commandstats"].get(cmd, {"calls": 0, "usec": 0})
        b = before["commandstats"].get(cmd, {"calls": 0, "usec": 0})
        return a["calls"] - b["calls"], a["usec"] - b["usec"]

    calls, usec = delta("evalsha")
    inside = {}
    for cmd in sorted(after["commandstats"]):
        if cmd in ("evalsha", "info"):
            continue
        c, u = delta(cmd)
        if c > 0:
            inside[cmd] = round(u / n, 2)
    return {
        "evalsha_calls": calls,
        "evalsha_us_per_call": round(usec / max(calls, 1), 2),
        "inside_us_per_submit": inside,
        "redis_cpu_us_per_submit": round((after["cpu"] - before["cpu"]) * 1e6 / n, 2),
    }


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
