"""`POST /api/jobs` under concurrency against the HTTP floor, measured in the same run.

    .venv/bin/python bench/http_submit.py                  # 64 in flight, 20,000 requests, 3 rounds
    .venv/bin/python bench/http_submit.py --quick          # 2,000 requests, 1 round
    .venv/bin/python bench/http_submit.py --inflight 16 --n 10000 --rounds 5
    .venv/bin/python bench/http_submit.py --profile /tmp/svc.txt   # + py-spy on the service

Two servers on 127.0.0.1, each one process, started here and stopped here by their pids:

* **service** — `python -m service` (one process, uvloop, no access log; env
  `TIDINGS_WORKERS_TASKS=bench.tasks`, `TIDINGS_CONFIG=/dev/null`) on a private redis-server;
  no worker runs, so every job stays queued;
* **floor** — a bare aiohttp app (`FLOOR` below, uvloop, no access log) whose only route decodes
  the JSON body with msgspec and answers 201 with a small JSON body: what any aiohttp JSON POST
  handler costs on this machine, with no Redis and no validation.

One aiohttp client (this process, uvloop when installed, one keep-alive connection per lane)
sends the same body (`{"task": "bench.noop", "payload": {}}`) with `--inflight` requests in flight
to each server in turn: warm-up, then N timed requests; floor, service, floor, service ... for
`--rounds` rounds. Per server: requests/s, p50 / p99 latency, the server's CPU µs per request
(utime + stime from /proc) and this client's CPU share. The ratio service / floor is taken per
round (same minute, same load) and its median printed. The jobs the service created are
counted back from the queue stream (XLEN) to check that every 201 was a job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import (  # bench/ is the script's directory
    PREFIX,
    cpu_seconds,
    fmt_rate,
    free_port,
    lat_stats,
    private_redis,
    start_service,
    sync_client,
    table,
)

# The floor: the least an aiohttp JSON POST endpoint does (run with `python -c FLOOR port`).
FLOOR = """
import sys, msgspec, uvloop
from aiohttp import web
decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
n = 0
async def submit(request):
    global n
    body = decode(await request.read())
    n += 1
    out = {"id": f"{n:026d}", "task": body["task"], "state": "queued"}
    return web.Response(body=encode(out), status=201, content_type="application/json")
async def healthz(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/api/jobs", submit)
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop(), backlog=4096)
"""

BODY = json.dumps({"task": "bench.noop", "payload": {}}).encode()
HEADERS = {"Content-Type": "application/json"}


async def up(s: aiohttp.ClientSession, base: str, alive: Any, log: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with s.get(base + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"server did not come up; see {log}")
        await asyncio.sleep(0.1)


async def load(base: str, n: int, inflight: int, pid: int) -> dict[str, Any]:
    """n POSTs with `inflight` lanes, each lane on its own keep-alive connection."""
    conn = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=conn) as s:
        url = base + "/api/jobs"
        lat: list[float] = []
        bad = 0
        todo = 0

        async def lane() -> None:
            nonlocal todo, bad
            while todo > 0:
                todo -= 1
                t = time.perf_counter()
                async with s.post(url, data=BODY, headers=HEADERS) as resp:
                    await resp.read()
                    if resp.status != 201:
                        bad += 1
                lat.append((time.perf_counter() - t) * 1000)

        todo = min(n, 2000)  # warm-up: connections, caches, the script cache
        await asyncio.gather(*(lane() for _ in range(inflight)))
        lat.clear()
        todo = n
        cpu0, c0 = cpu_seconds(pid), os.times()
        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        wall = time.perf_counter() - t0
        cpu1, c1 = cpu_seconds(pid), os.times()
    client = (c1.user + c1.system) - (c0.user + c0.system)
    return {
        "per_s": round(n / wall, 1),
        **{k: v for k, v in lat_stats(lat).items() if k != "samples"},
        "server_cpu_us_per_req": round((cpu1 - cpu0) * 1e6 / n, 1),
        "server_cpu_frac": round((cpu1 - cpu0) / wall, 3),
        "client_cpu_frac": round(client / wall, 3),
        "not_201": bad,
    }


def start_floor(port: int, logdir: Path) -> subprocess.Popen[bytes]:
    log = open(logdir / "floor.log", "ab")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-c", FLOOR, str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_spy(py_spy: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the service (--nonblocking: not paused to sample), collapsed stacks."""
    argv = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
    argv += ["--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_floor(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)  # our own child, by pid
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="timed requests per server and round")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="n = 2,000, one round")
    ap.add_argument("--redis-server", default=shutil.which("redis-server"))
    ap.add_argument(
        "--profile",
        type=Path,
        help="after the rounds, load the service once more under py-spy (collapsed stacks here)",
    )
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy")
    a = ap.parse_args()
    if a.quick:
        a.n, a.rounds = 2000, 1
    res: dict[str, Any] = {
        "bench": "http_submit",
        "python": platform.python_version(),
        "n": a.n,
        "inflight": a.inflight,
        "loadavg_start": os.getloadavg()[0],
        "rounds": [],
    }
    with private_redis(a.redis_server) as server, tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        sport, fport = free_port(), free_port()
        svc = start_service(server.url, sport, logdir)
        floor = start_floor(fport, logdir)
        sbase, fbase = f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{fport}"
        try:
            async with aiohttp.ClientSession() as s:
                await up(s, sbase, svc.alive, str(svc.log_path))
                await up(s, fbase, lambda: floor.poll() is None, str(logdir / "floor.log"))
            r = sync_client(server.url)
            stream = f"{{{PREFIX}:0}}:q:default"
            for i in range(a.rounds):
                f = await load(fbase, a.n, a.inflight, floor.pid)
                before = int(r.xlen(stream))
                sv = await load(sbase, a.n, a.inflight, svc.pid)
                sv["jobs_created"] = int(r.xlen(stream)) - before - min(a.n, 2000)
                ratio = sv["per_s"] / f["per_s"]
                res["rounds"].append(
                    {
                        "floor": f,
                        "service": sv,
                        "ratio": round(ratio, 3),
                        "loadavg": os.getloadavg()[0],
                    }
                )
                print(
                    table(
                        [
                            (name, _row(x))
                            for name, x in (("floor (bare aiohttp)", f), ("POST /api/jobs", sv))
                        ]
                        + [("service / floor", f"{ratio:.2f}x")],
                        f"Round {i + 1}: {a.inflight} in flight, N={a.n} "
                        f"(load average {os.getloadavg()[0]:.2f})",
                    )
                    + "\n",
                    flush=True,
                )
            if a.profile is not None:
                spy = start_spy(a.py_spy, svc.pid, a.profile)
                await asyncio.sleep(1.0)  # py-spy attached
                res["profiled"] = await load(sbase, a.n, a.inflight, svc.pid)
                spy.send_signal(signal.SIGINT)  # our own child: it writes the file and exits
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
                print(f"py-spy profile of the service under load in {a.profile}\n", flush=True)
            r.close()
        finally:
            svc.stop()
            stop_floor(floor)
    rounds = res["rounds"]
    med = {
        "floor_per_s": statistics.median(x["floor"]["per_s"] for x in rounds),
        "service_per_s": statistics.median(x["service"]["per_s"] for x in rounds),
        "ratio": statistics.median(x["ratio"] for x in rounds),
        "ratio_min": min(x["ratio"] for x in rounds),
        "ratio_max": max(x["ratio"] for x in rounds),
    }
    res["median"] = med
    print(
        f"median of {len(rounds)}: floor {fmt_rate(med['floor_per_s'])} /s, POST /api/jobs "
        f"{fmt_rate(med['service_per_s'])} /s, ratio {med['ratio']:.2f}x "
        f"({med['ratio_min']:.2f}-{med['ratio_max']:.2f})\n",
        flush=True,
    )
    print(json.dumps(res), flush=True)


def _row(x: dict[str, Any]) -> str:
    out = (
        f"{fmt_rate(x['per_s'])} /s, p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.2f} ms, "
        f"server {x['server_cpu_us_per_req']:.0f} µs CPU/req ({x['server_cpu_frac'] * 100:.0f}% "
        f"of a core), client {x['client_cpu_frac'] * 100:.0f}%"
    )
    if x["not_201"]:
        out += f", {x['not_201']} not 201"
    if "jobs_created" in x:
        out += f", {x['jobs_created']:,} jobs created"
    return out


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
