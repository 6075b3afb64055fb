"""Throughput, latency and Redis cost of Tidings on a private redis-server.

    .venv/bin/python bench/throughput.py            # full run (a few minutes)
    .venv/bin/python bench/throughput.py --quick    # smoke run (~30 s)
    .venv/bin/python bench/throughput.py --only drain --profile /tmp/prof

Sections (all by default; `--only a,b`):
  enqueue  Producer.submit one by one, awaited (N jobs/s), then submit_many in batches of 1000
           (after 200 warm-ups; landed jobs counted from queues() as differences)
  drain    N no-op jobs pre-enqueued, then `python -m workers --processes 2` (default concurrency):
           jobs/s from spawn until queues() shows queued+running+scheduled == 0, the steady rate
           from the first poll that saw progress, Redis CPU µs and commands per job (INFO deltas,
           top commandstats), Redis's time in the scripts per job (EVALSHA usec, the commands they
           call included), worker CPU µs per job (/proc of the worker processes)
  rt       one worker process; Producer.submit then Producer.wait, sequential: 20 warm-ups + 500
  memory   used_memory delta per queued job (at 100,000 jobs) and per retained finished job
           (after draining them; the job hash, which holds its events too, and its index entry;
           the firehose is bounded and reported apart)
  http     `python -m service`: POST /api/jobs from one aiohttp client with keep-alive, one at a
           time and 16 in flight, against Producer.submit one at a time in the same run

Prints a plain-text table per section and, last, one JSON line with every figure.
No timing assertion anywhere: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # bench/ is the script's directory, so its siblings import directly
from common import (
    PREFIX,
    cpu_seconds,
    diff,
    fmt_rate,
    lat_stats,
    private_redis,
    snapshot,
    start_service,
    start_workers,
    sync_client,
    table,
    worker_up,
)

import bench.tasks  # noqa: F401  (registers bench.noop so the producer validates like the API)
from service.producer import Producer

POLL_S = 0.05
DRAIN_TIMEOUT_S = 300.0


def remaining(stats: dict[str, Any]) -> int:
    q = stats.get("default")
    if q is None:
        return 0
    return int(q.queued + q.running + q.scheduled)


async def fill(p: Producer, n: int) -> None:
    done = 0
    while done < n:
        k = min(1000, n - done)
        await p.submit_many([("bench.noop", {})] * k)
        done += k


# -- enqueue -----------------------------------------------------------------------------------


async def bench_enqueue(url: str, n: int) -> dict[str, Any]:
    r = sync_client(url)
    r.flushall()
    r.close()
    async with Producer.from_url(url, prefix=PREFIX) as p:
        for _ in range(200):  # warm the connection, the script cache and the queue registry
            await p.submit("bench.noop", {})
        # counted as differences, no FLUSHALL in between: the producer remembers the queues it
        # registered (for up to 60 s), and a flushed registry would hide them from queues()
        base = remaining(await p.queues())
        t0 = time.perf_counter()
        for _ in range(n):
            await p.submit("bench.noop", {})
        one = n / (time.perf_counter() - t0)
        landed_one = remaining(await p.queues()) - base
        t0 = time.perf_counter()
        await fill(p, n)
        bulk = n / (time.perf_counter() - t0)
        landed_bulk = remaining(await p.queues()) - base - landed_one
    r = sync_client(url)
    r.flushall()
    r.close()
    assert landed_one == n and landed_bulk == n, (landed_one, landed_bulk)
    return {"n": n, "enqueue_one_per_s": round(one, 1), "submit_many_per_s": round(bulk, 1)}


# -- drain -------------------------------------------------------------------------------------


def start_spies(py_spy: str, pids: list[int], profile: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on the worker processes until they exit: worker 0 as collapsed stacks (text, for
    analysis), worker 1 as a flame graph. --nonblocking: the workers are not paused to sample."""
    profile.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid, fmt, name in zip(
        pids, ("raw", "flamegraph"), ("worker0.txt", "worker1.svg"), strict=False
    ):
        argv = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
        argv += ["--format", fmt, "-o", str(profile / name)]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


async def drain(
    url: str,
    n: int,
    logdir: Path,
    *,
    processes: int = 2,
    concurrency: int | None = None,
    profile: Path | None = None,
    py_spy: str | None = None,
) -> dict[str, Any]:
    r = sync_client(url)
    r.flushall()
    async with Producer.from_url(url, prefix=PREFIX) as p:
        await fill(p, n)
        rem0 = remaining(await p.queues())
        assert rem0 == n, rem0
        await asyncio.sleep(0.5)
        before = snapshot(r)
        t0 = time.perf_counter()
        w = start_workers(url, processes, logdir, concurrency=concurrency)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            kids = w.children(want=processes)
            if profile is not None and py_spy:
                spies = start_spies(py_spy, kids, profile)
            t_first = rem_first = None
            cpu_first = 0.0
            rem = rem0
            polls = 0
            while True:
                await asyncio.sleep(POLL_S)
                rem = remaining(await p.queues())
                polls += 1
                now = time.perf_counter()
                if t_first is None and rem < n:
                    t_first, rem_first = now, rem
                    cpu_first = sum(cpu_seconds(pid) for pid in kids)
                if rem <= 0 or now - t0 > DRAIN_TIMEOUT_S:
                    break
                if not w.alive():
                    raise RuntimeError(f"workers exited; see {w.log_path}")
            t_end = time.perf_counter()
            after = snapshot(r)
            worker_cpu = sum(cpu_seconds(pid) for pid in kids)
            sup_cpu = cpu_seconds(w.pid)
        finally:
            w.stop()
            for s in spies:
                try:
                    s.wait(30)
                except subprocess.TimeoutExpired:
                    s.kill()
                    s.wait()
    r.close()
    done = n - rem
    out: dict[str, Any] = {
        "n": n,
        "processes": processes,
        "concurrency": concurrency or "default",
        "completed": done,
        "drain_s": round(t_end - t0, 3),
        "drain_per_s": round(done / (t_end - t0), 1),
        "first_done_after_s": round((t_first or t_end) - t0, 3),
        "polls": polls,
        "worker_cpu_us_per_job": round(worker_cpu * 1e6 / max(done, 1), 1),
        "supervisor_cpu_s": round(sup_cpu, 3),
        **{
            k: (round(v, 2) if isinstance(v, float) else v)
            for k, v in diff(before, after, n).items()
        },
    }
    if t_first is not None and rem_first is not None and t_end > t_first:
        out["steady_per_s"] = round(rem_first / (t_end - t_first), 1)
        # without the workers' start-up (imports, connections): from the first poll with progress
        out["worker_cpu_us_per_job_steady"] = round(
            (worker_cpu - cpu_first) * 1e6 / max(rem_first, 1), 1
        )
    if rem > 0:
        out["error"] = f"timed out with {rem} remaining"
    return out


# -- round trip --------------------------------------------------------------------------------


async def bench_rt(url: str, n: int, logdir: Path, warmup: int = 20) -> dict[str, Any]:
    r = sync_client(url)
    r.flushall()
    r.close()
    w = start_workers(url, 1, logdir)
    try:
        async with Producer.from_url(url, prefix=PREFIX) as p:
            await worker_up(p, w)
            for _ in range(warmup):
                job = await p.submit("bench.noop", {})
                await p.wait(job.id, timeout=30)
            lat: list[float] = []
            t_start = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                job = await p.submit("bench.noop", {})
                done = await p.wait(job.id, timeout=30)
                lat.append((time.perf_counter() - t) * 1000)
                assert done.state == "succeeded", done.state
                if time.perf_counter() - t_start > 60:
                    break
    finally:
        w.stop()
    return lat_stats(lat)


# -- memory ------------------------------------------------------------------------------------


async def bench_memory(url: str, n: int, logdir: Path) -> dict[str, Any]:
    r = sync_client(url)
    r.flushall()
    await asyncio.sleep(0.2)
    base = int(r.info("memory")["used_memory"])
    async with Producer.from_url(url, prefix=PREFIX) as p:
        await fill(p, n)
        queued_mem = int(r.info("memory")["used_memory"])
        k = f"{{{PREFIX}:0}}:"
        fire = k + "fire"
        sample = (await p.queries.list_jobs(limit=1))[0][0].id
        keys_q = {
            # the job hash holds the job and its events (fields "1".."n")
            "job_hash": r.memory_usage(f"{k}job:{sample}", samples=0),
            "queue_stream_per_job": r.memory_usage(f"{k}q:default", samples=0) / n,
            "index_stream_per_job": r.memory_usage(f"{k}idx", samples=0) / n,
            "firehose_per_job": r.memory_usage(fire, samples=0) / n,
        }
        w = start_workers(url, 2, logdir)
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while True:
                if remaining(await p.queues()) == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            w.stop()
        left = remaining(await p.queues())
    await asyncio.sleep(0.3)
    finished_mem = int(r.info("memory")["used_memory"])
    fire_bytes = int(r.memory_usage(fire, samples=0) or 0)
    fire_len = int(r.xlen(fire))
    keys_f = {
        "job_hash": r.memory_usage(f"{k}job:{sample}", samples=0),
        "queue_stream_total": r.memory_usage(f"{k}q:default", samples=0),
        "index_stream_total": r.memory_usage(f"{k}idx", samples=0),
        "stats_hash_total": r.memory_usage(f"{k}stats", samples=0),
    }
    r.flushall()
    r.close()
    return {
        "n": n,
        "queued_bytes_per_job": round((queued_mem - base) / n, 1),
        "finished_bytes_per_job": round((finished_mem - base) / n, 1),
        "finished_bytes_per_job_without_firehose": round((finished_mem - base - fire_bytes) / n, 1),
        "firehose_bytes": fire_bytes,
        "firehose_len": fire_len,
        "left_unfinished": left,
        "sample_queued": {k: round(v, 1) for k, v in keys_q.items() if v is not None},
        "sample_finished": {k: v for k, v in keys_f.items() if v is not None},
    }


# -- HTTP --------------------------------------------------------------------------------------


async def bench_http(url: str, n: int, logdir: Path, inflight: int = 16) -> dict[str, Any]:
    import aiohttp

    r = sync_client(url)
    r.flushall()
    port = common.free_port()
    svc = start_service(url, port, logdir)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"n": n}
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with s.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or not svc.alive():
                    raise RuntimeError(f"service did not come up; see {svc.log_path}")
                await asyncio.sleep(0.1)
            body = json.dumps({"task": "bench.noop", "payload": {}}).encode()
            headers = {"Content-Type": "application/json"}

            async def post() -> float:
                t = time.perf_counter()
                async with s.post(base + "/api/jobs", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 201:
                        raise RuntimeError(f"POST /api/jobs -> {resp.status}")
                return (time.perf_counter() - t) * 1000

            async with Producer.from_url(url, prefix=PREFIX) as p:
                for _ in range(200):
                    await post()
                    await p.submit("bench.noop", {})
                # Producer.submit, one at a time
                lat = []
                t0 = time.perf_counter()
                for _ in range(n):
                    t = time.perf_counter()
                    await p.submit("bench.noop", {})
                    lat.append((time.perf_counter() - t) * 1000)
                out["producer_per_s"] = round(n / (time.perf_counter() - t0), 1)
                out["producer"] = lat_stats(lat)
            # HTTP, one at a time on one keep-alive connection
            lat = []
            t0 = time.perf_counter()
            for _ in range(n):
                lat.append(await post())
            out["http_seq_per_s"] = round(n / (time.perf_counter() - t0), 1)
            out["http_seq"] = lat_stats(lat)
            # HTTP, `inflight` requests at once (one client process, keep-alive pool)
            lat = []
            todo = n

            async def lane() -> None:
                nonlocal todo
                while todo > 0:
                    todo -= 1
                    lat.append(await post())

            t0 = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(inflight)))
            out[f"http_c{inflight}_per_s"] = round(n / (time.perf_counter() - t0), 1)
            out[f"http_c{inflight}"] = lat_stats(lat)
        out["service_cpu_s"] = round(cpu_seconds(svc.pid), 2)
    finally:
        svc.stop()
        r.flushall()
        r.close()
    out["http_hop_ms_p50"] = round(out["http_seq"]["p50_ms"] - out["producer"]["p50_ms"], 3)
    return out


# -- main --------------------------------------------------------------------------------------


def redis_version(url: str) -> str:
    r = sync_client(url)
    v = str(r.info("server")["redis_version"])
    r.close()
    return v


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=20000, help="jobs for enqueue and drain (default 20000)"
    )
    ap.add_argument("--rt", type=int, default=500, help="round trips (default 500)")
    ap.add_argument("--mem-n", type=int, default=100_000, help="jobs for the memory figures")
    ap.add_argument("--http-n", type=int, default=5000, help="requests per HTTP mode")
    ap.add_argument("--quick", action="store_true", help="small N everywhere (smoke run)")
    ap.add_argument("--only", default="enqueue,drain,rt,memory,http")
    ap.add_argument(
        "--concurrency", type=int, help="worker concurrency for the drain (default: config)"
    )
    ap.add_argument("--profile", type=Path, help="also drain once more under py-spy, writing here")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy")
    ap.add_argument("--redis-server", default=shutil.which("redis-server"))
    a = ap.parse_args()
    if a.quick:
        a.n, a.rt, a.mem_n, a.http_n = 2000, 100, 5000, 500
    only = set(a.only.split(","))
    res: dict[str, Any] = {"bench": "throughput", "python": platform.python_version()}
    tmpdir = tempfile.TemporaryDirectory(prefix="tidings-bench-")
    with private_redis(a.redis_server) as server, tmpdir as tmp:
        logdir = Path(tmp)
        url = server.url
        res["redis"] = redis_version(url)
        if "enqueue" in only:
            e = res["enqueue"] = await bench_enqueue(url, a.n)
            print(
                table(
                    [
                        (
                            "Producer.submit one by one",
                            f"{fmt_rate(e['enqueue_one_per_s'])} jobs/s",
                        ),
                        (
                            "Producer.submit_many (batches of 1000)",
                            f"{fmt_rate(e['submit_many_per_s'])} jobs/s",
                        ),
                    ],
                    f"Enqueue (N={a.n})",
                )
                + "\n",
                flush=True,
            )
        if "drain" in only:
            d = res["drain"] = await drain(url, a.n, logdir, concurrency=a.concurrency)
            print(
                table(
                    [
                        (
                            "drain (spawn -> all done)",
                            f"{fmt_rate(d['drain_per_s'])} jobs/s in {d['drain_s']} s",
                        ),
                        (
                            "steady (from first progress)",
                            f"{fmt_rate(d.get('steady_per_s', 0))} jobs/s",
                        ),
                        ("first job done after", f"{d['first_done_after_s']} s"),
                        ("Redis CPU per job", f"{d['redis_cpu_us_per_job']:.1f} µs"),
                        ("Redis script time per job", f"{d['script_us_per_job']:.1f} µs"),
                        ("Redis commands per job", f"{d['cmds_per_job']:.2f}"),
                        (
                            "worker CPU per job (2 procs)",
                            f"{d['worker_cpu_us_per_job']:.0f} µs with start-up, "
                            f"{d.get('worker_cpu_us_per_job_steady', 0):.0f} µs steady",
                        ),
                        (
                            "top commands /job (µs/call)",
                            ", ".join(
                                f"{t['cmd']} {t['per_job']} ({t['usec_per_call']})"
                                for t in d["top"][:6]
                            ),
                        ),
                    ],
                    f"Drain (N={a.n}, python -m workers --processes 2, "
                    f"concurrency {d['concurrency']})",
                )
                + "\n",
                flush=True,
            )
            if a.profile is not None:
                res["drain_profiled"] = await drain(
                    url,
                    max(a.n, 20000),
                    logdir,
                    concurrency=a.concurrency,
                    profile=a.profile,
                    py_spy=a.py_spy,
                )
                print(
                    f"py-spy profiles in {a.profile} (drain under the profiler: "
                    f"{fmt_rate(res['drain_profiled']['drain_per_s'])} jobs/s)\n",
                    flush=True,
                )
        if "rt" in only:
            t = res["rt"] = await bench_rt(url, a.rt, logdir)
            print(
                table(
                    [
                        ("p50 / p99", f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} ms"),
                        ("mean / max", f"{t['mean_ms']:.2f} / {t['max_ms']:.2f} ms"),
                    ],
                    f"Round trip (submit + wait, sequential, 1 worker process, "
                    f"{t['samples']} samples)",
                )
                + "\n",
                flush=True,
            )
        if "memory" in only:
            m = res["memory"] = await bench_memory(url, a.mem_n, logdir)
            print(
                table(
                    [
                        ("per queued job", f"{m['queued_bytes_per_job']:,.0f} B"),
                        (
                            "per retained finished job (with events)",
                            f"{m['finished_bytes_per_job']:,.0f} B",
                        ),
                        (
                            "  of which outside the firehose",
                            f"{m['finished_bytes_per_job_without_firehose']:,.0f} B",
                        ),
                        (
                            "firehose (bounded, shared)",
                            f"{m['firehose_bytes']:,} B, {m['firehose_len']:,} events",
                        ),
                        ("sample queued (MEMORY USAGE)", json.dumps(m["sample_queued"])),
                        ("sample finished (MEMORY USAGE)", json.dumps(m["sample_finished"])),
                    ],
                    f"Redis memory (used_memory delta / N, N={a.mem_n})",
                )
                + "\n",
                flush=True,
            )
        if "http" in only:
            h = res["http"] = await bench_http(url, a.http_n, logdir)
            print(
                table(
                    [
                        (
                            "Producer.submit, 1 at a time",
                            f"{fmt_rate(h['producer_per_s'])} /s, p50 "
                            f"{h['producer']['p50_ms']:.2f} p99 {h['producer']['p99_ms']:.2f} ms",
                        ),
                        (
                            "POST /api/jobs, 1 at a time",
                            f"{fmt_rate(h['http_seq_per_s'])} /s, p50 "
                            f"{h['http_seq']['p50_ms']:.2f} p99 {h['http_seq']['p99_ms']:.2f} ms",
                        ),
                        (
                            "POST /api/jobs, 16 in flight",
                            f"{fmt_rate(h['http_c16_per_s'])} /s, p50 "
                            f"{h['http_c16']['p50_ms']:.2f} p99 {h['http_c16']['p99_ms']:.2f} ms",
                        ),
                        ("HTTP hop (p50 difference)", f"{h['http_hop_ms_p50']:.3f} ms"),
                    ],
                    f"HTTP submit (N={a.http_n} per mode, one aiohttp client, keep-alive)",
                )
                + "\n",
                flush=True,
            )
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
