"""Progress to screen: from `await ctx.progress(...)` in a real worker process to an SSE client
of `python -m service` receiving the event on `GET /api/jobs/{id}/events`.

    .venv/bin/python bench/progress_latency.py            # J=1,000 jobs, W=10 watchers, K=10 steps
    .venv/bin/python bench/progress_latency.py --quick    # 100 x 10 x 5
    .venv/bin/python bench/progress_latency.py --hold 2   # jobs end 2 s after their last report

`--jobs`, `--watchers`, `--steps` change the sizes; `--redis-server PATH` picks the binary;
`--progress-interval S` sets workers.progress_interval_s; `--no-pin` drops the taskset pinning;
`--py-spy PATH` records the service (raw collapsed stacks, `--py-spy-out`) from the last second
of reports to the end.

A private redis-server (no persistence, a free port), `python -m service` (pinned to CPU 0 with
taskset; TIDINGS_SSE_MAX_CONNECTIONS raised to J x W + 1,000) and `python -m workers --processes
2 --tasks bench.tasks` (concurrency ceil(J/2) + 16, so every job runs at once; unpinned;
workers.grace_s = 1, so a run stopped early hands the waiting jobs back at once) are started
here and stopped here by their pids, as is the client process. J `bench.tick` jobs are
submitted and fetched by the workers, where they wait on a start gate (a Redis key outside
Tidings' keys, polled once per worker process). A separate client process (this file with
`--client`, pinned to CPU 1, uvloop) opens W raw-socket SSE streams per job and says when every
one answered 200; then the gate opens 0.5 s ahead. Each job sleeps a random phase in [0, 1) s,
then calls `await ctx.progress(k, total=K, message=f"{time.time():.6f}")` once per second for
k = 1..K and returns: about J progress events/s in total, J x W deliveries/s.

Printed, per delivered progress event (every one, no sampling):
- latency = the client's time.time() when the socket read holding the event returned, minus the
  time.time() in its message (same machine, same clock): p50 / p90 / p99 / max, against the
  targets p50 25 ms and p99 60 ms (as ratios);
- the same split at the event id (Redis TIME in ms when the writer's script ran, truncated, so
  "call -> Redis" reads up to 1 ms low and "Redis -> client" up to 1 ms high);
- the same for the final values (current == K) alone, p50 / p99 per step k, and the terminal
  event's arrival after the final value's call;
- the final value: each watcher must see the progress event with current == K and then the
  terminal `succeeded`; watchers that missed either (or never connected) are counted;
- CPU of the service, the worker processes, Redis and the client over the window (start gate to
  the last stream's end), how long the service and the client waited for a CPU (/proc
  schedstat), Redis script calls and XREAD calls in the window (the writers' and the hub's
  batching), SSE watchers the service cut as slow; the service's CPU and run-queue wait in
  each second after the start time.

Every job starts at the same moment, so every job also ends within the same second: in the last
second the service also ends J x W streams (the by-step line shows what that does to step K).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import aiohttp
from common import (  # bench/ is the script's directory
    PREFIX,
    Proc,
    cpu_seconds,
    env_for,
    free_port,
    pct,
    private_redis,
    snapshot,
    sync_client,
    table,
    worker_up,
)
from sse_fanout import connect_all, metrics, pin, runq_wait_s

GATE = "latbench:go"  # outside Tidings' keys (prefix "bench")
EVERY_S = 1.0
TARGET_P50_MS = 25.0
TARGET_P99_MS = 60.0
TERMINAL = (b"succeeded", b"failed", b"cancelled")


# -- the client process ------------------------------------------------------------------------


class Tally:
    """What one client process saw, over all its streams."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.lat = array("d")  # ms: receipt - time.time() in the message, every progress event
        self.lat_final = array("d")  # the same, events with current == K only
        self.to_redis = array("d")  # ms: event id (Redis TIME, ms) - message time
        self.from_redis = array("d")  # ms: receipt - event id
        self.final_to_redis = array("d")  # the split for current == K only
        self.final_from_redis = array("d")
        self.by_step: dict[int, array[float]] = {}  # latency per value of current
        self.terminal_after = array("d")  # ms: receipt of the terminal - message of current == K
        self.connected = 0
        self.failed = 0
        self.lost_early = 0  # connections that ended before their terminal event
        self.other = 0  # non-progress events (replayed lifecycle events, the terminal)
        self.dups = 0  # a progress id not above the previous one on the same stream
        self.open = 0
        self.all_done = asyncio.Event()


MSG = b'"message":"'
CUR = b'"current":'


class Tail(asyncio.Protocol):
    """One SSE GET, hand-written: every frame parsed (HTTP chunk framing sits between frames)."""

    __slots__ = (
        "buf",
        "count",
        "done",
        "final_msg",
        "last_id",
        "ready",
        "req",
        "saw_final",
        "t",
        "terminal",
        "tr",
    )

    def __init__(self, t: Tally, req: bytes, ready: asyncio.Future[bool]) -> None:
        self.t = t
        self.req = req
        self.ready: asyncio.Future[bool] | None = ready
        self.buf = b""
        self.tr: asyncio.Transport | None = None
        self.count = 0  # progress events
        self.last_id = (0, 0)
        self.saw_final = False
        self.final_msg = 0.0
        self.terminal = b""
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.ready is not None:
            self.buf += data
            k = self.buf.find(b"\r\n\r\n")
            if k < 0:
                return
            ok = self.buf.startswith(b"HTTP/1.1 200")
            data = self.buf[k + 4 :]
            self.buf = b""
            ready, self.ready = self.ready, None
            if not ready.done():
                ready.set_result(ok)
            if not ok:
                self.done = True  # counted as failed, not as ended early
                return
        buf = self.buf + data if self.buf else data
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self.frame(buf[start:end], now)
            start = end + 2
        self.buf = buf[start:]

    def frame(self, f: bytes, now: float) -> None:
        i = f.find(b"event: ")
        if i < 0:
            return  # retry:, a heartbeat
        typ = f[i + 7 : f.find(b"\n", i)]
        t = self.t
        if typ != b"progress":
            t.other += 1
            if typ in TERMINAL and not self.done:
                self.terminal = typ
                if self.saw_final:
                    t.terminal_after.append((now - self.final_msg) * 1000)
                self.finish()
            return
        self.count += 1
        j = f.find(b"id: ")
        ms, _, seq = f[j + 4 : f.find(b"\n", j)].partition(b"-")
        key = (int(ms), int(seq or 0))
        if key <= self.last_id:
            t.dups += 1
        self.last_id = key
        j = f.find(MSG)
        if j < 0:
            return  # not a bench.tick event
        j += len(MSG)
        sent = float(f[j : f.find(b'"', j)])
        lat = (now - sent) * 1000
        t.lat.append(lat)
        red = key[0] / 1000
        t.to_redis.append((red - sent) * 1000)
        t.from_redis.append((now - red) * 1000)
        j = f.find(CUR) + len(CUR)
        e = j
        while f[e] not in b",}":
            e += 1
        cur = int(float(f[j:e]))
        by = t.by_step.get(cur)
        if by is None:
            by = t.by_step[cur] = array("d")
        by.append(lat)
        if cur == t.steps:
            self.saw_final = True
            self.final_msg = sent
            t.lat_final.append(lat)
            t.final_to_redis.append((red - sent) * 1000)
            t.final_from_redis.append((now - red) * 1000)

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.t.open -= 1
            if self.t.open == 0:
                self.t.all_done.set()
            if self.tr is not None:
                self.tr.close()  # the response ended; the keep-alive connection is not needed

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)
        if not self.done and self.ready is None:
            self.t.lost_early += 1
            self.finish()


def lat(ms: array[float] | list[float]) -> dict[str, Any]:
    v = sorted(ms)
    if not v:
        return {"samples": 0}
    return {
        "samples": len(v),
        "p50_ms": round(pct(v, 0.5), 2),
        "p90_ms": round(pct(v, 0.9), 2),
        "p99_ms": round(pct(v, 0.99), 2),
        "max_ms": round(v[-1], 2),
        "over_60ms": sum(1 for x in v if x > TARGET_P99_MS),
    }


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def exists(path: str) -> bool:
    return os.path.exists(path)


def write_json(path: str, obj: Any) -> None:
    """Atomically (the other process polls for the file)."""
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


async def client(cfg_path: str) -> int:
    cfg = read_json(cfg_path)
    port, jobs, w, steps = cfg["port"], cfg["jobs"], cfg["watchers"], cfg["steps"]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # stopped while connecting: nothing to report, go at once (the kernel closes the sockets)
    loop.add_signal_handler(signal.SIGTERM, os._exit, 143)
    t = Tally(steps)
    t0 = time.perf_counter()
    t.open = len(jobs) * w
    protos = await connect_all(port, jobs, len(jobs) * w, t, lambda req, ready: Tail(t, req, ready))
    connect_s = time.perf_counter() - t0
    live = [p for p in protos if p.ready is None and not p.done]
    t.open = len(live)
    write_json(cfg["ready"], {"connected": t.connected, "failed": t.failed})
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # from now on: report what was seen
    cpu0, wait0, w0 = os.times(), runq_wait_s(os.getpid()), time.perf_counter()
    if t.open:
        done = asyncio.ensure_future(t.all_done.wait())
        halt = asyncio.ensure_future(stop.wait())
        await asyncio.wait([done, halt], return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        halt.cancel()
    cpu1, wait1, wall = os.times(), runq_wait_s(os.getpid()), time.perf_counter() - w0
    counts = [p.count for p in live]
    per_job: dict[str, int] = {}
    for p in protos:
        jid = p.req.split(b"/")[3].decode()  # GET /api/jobs/{id}/events
        per_job[jid] = max(per_job.get(jid, 0), p.count)
    out = {
        "connected": t.connected,
        "failed": t.failed,
        "connect_s": round(connect_s, 2),
        "delivered": len(t.lat),
        "other_events": t.other,
        "duplicates": t.dups,
        "lost_early": t.lost_early,
        "still_open": t.open,
        "missing_final_progress": sum(1 for p in live if not p.saw_final),
        "missing_succeeded": sum(1 for p in live if p.terminal != b"succeeded"),
        "missing_either": sum(1 for p in live if not p.saw_final or p.terminal != b"succeeded"),
        "watchers_short_of_k": sum(1 for c in counts if c < steps),
        "written_seen": sum(per_job.values()),
        "latency": lat(t.lat),
        "latency_final": lat(t.lat_final),
        "call_to_redis": lat(t.to_redis),
        "redis_to_client": lat(t.from_redis),
        "final_call_to_redis": lat(t.final_to_redis),
        "final_redis_to_client": lat(t.final_from_redis),
        "by_step": {str(k): lat(v) for k, v in sorted(t.by_step.items())},
        "terminal_after_final": lat(t.terminal_after),
        # from "all connected" to the end (the settle before the gate included): this process
        # exits before the orchestrator could read its /proc
        "client_cpu_frac": round(((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 3),
        "client_runq_wait_frac": round((wait1 - wait0) / wall, 3),
    }
    for p in protos:
        if p.tr is not None:
            p.tr.abort()
    write_json(cfg["out"], out)
    return 0


# -- the orchestrator --------------------------------------------------------------------------


async def wait_for(what: str, cond: Any, timeout: float, alive: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        for p in alive:
            if not p.alive():
                tail = p.log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{p.log_path.name}: exited while waiting for {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def by_second(samples: list[tuple[float, float, float]]) -> list[list[float]]:
    """Service CPU and run-queue wait (fractions) in each second after the start time: where
    in the run the service was busy."""
    out = []
    sec = 0
    while True:
        a = next((x for x in samples if x[0] >= sec), None)
        b = next((x for x in samples if x[0] >= sec + 1), None)
        if a is None or b is None:
            return out
        dt = b[0] - a[0]
        out.append([round((b[1] - a[1]) / dt, 2), round((b[2] - a[2]) / dt, 2)])
        sec += 1


def cpu_tree(p: Proc) -> float:
    return cpu_seconds(p.pid) + sum(cpu_seconds(c) for c in p.children())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import bench.tasks  # noqa: F401  (registers bench.tick: the producer validates the payload)
    from service.producer import Producer, SubmitRequest

    j, w, k = args.jobs, args.watchers, args.steps
    conc = math.ceil(j / 2) + 16
    pinned = bool(pin(0)) and not args.no_pin
    out: dict[str, Any] = {
        "jobs": j,
        "watchers_per_job": w,
        "steps": k,
        "every_s": EVERY_S,
        "worker_processes": 2,
        "worker_concurrency": conc,
        "progress_interval_s": args.progress_interval,
        "hold_s": args.hold,
        "pinned": pinned,
        "expected": j * w * k,
    }
    with (
        private_redis(args.redis_server) as server,
        tempfile.TemporaryDirectory(prefix="progress-latency-") as tmp,
    ):
        logdir = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        svc_env = env_for(
            server.url,
            TIDINGS_HTTP_HOST="127.0.0.1",
            TIDINGS_HTTP_PORT=str(port),
            TIDINGS_WORKERS_TASKS="bench.tasks",
            TIDINGS_SSE_MAX_CONNECTIONS=str(j * w + 1000),
            TIDINGS_REDIS_EMBEDDED_DIR=str(logdir),
        )
        # a stop while jobs still wait at the gate: hand them back after 1 s, not after 10
        wk_env = env_for(server.url, TIDINGS_WORKERS_GRACE_S="1")
        if args.progress_interval is not None:
            wk_env["TIDINGS_WORKERS_PROGRESS_INTERVAL_S"] = str(args.progress_interval)
        py = sys.executable
        procs: list[Proc] = []
        r = sync_client(server.url)
        http = aiohttp.ClientSession()
        try:
            svc = Proc(
                [*(pin(0) if pinned else []), py, "-m", "service"],
                svc_env,
                logdir / "service.log",
                logdir,
            )
            procs.append(svc)
            wk_argv = [py, "-m", "workers", "--tasks", "bench.tasks", "--processes", "2"]
            wk = Proc(
                [*wk_argv, "--concurrency", str(conc)],
                wk_env,
                logdir / "workers.log",
                logdir,
            )
            procs.append(wk)

            async def service_ready() -> bool:
                try:
                    async with http.get(base + "/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            async with Producer.from_url(server.url, prefix=PREFIX) as p:
                await worker_up(p, wk)
                await wait_for("the service", service_ready, 30, [svc])
                reqs = [
                    SubmitRequest(
                        task="bench.tick", payload={"steps": k, "gate": GATE, "hold_s": args.hold}
                    )
                    for _ in range(j)
                ]
                jobs = [job.id for job in await p.submit_many(reqs)]

                async def all_running() -> bool:
                    return sum(q.running for q in (await p.queues()).values()) >= j

                cfg = {"port": port, "jobs": jobs, "watchers": w, "steps": k}
                cfg.update(ready=str(logdir / "ready.json"), out=str(logdir / "out.json"))
                cfg_path = str(logdir / "client.json")
                write_json(cfg_path, cfg)
                cl = Proc(
                    [*(pin(1) if pinned else []), py, __file__, "--client", cfg_path],
                    env_for(server.url),
                    logdir / "client.log",
                    logdir,
                )
                procs.append(cl)
                await wait_for("every job running", all_running, 60, [wk])

                async def client_ready() -> bool:
                    return exists(cfg["ready"])

                t0 = time.perf_counter()
                await wait_for("the watchers", client_ready, 60 + j * w / 200, [cl, svc])
                out["connect_wait_s"] = round(time.perf_counter() - t0, 2)
                out["running_at_start"] = sum(q.running for q in (await p.queues()).values())
                await asyncio.sleep(args.settle)

                m0 = await metrics(http, base)
                s0 = snapshot(r)
                c0 = {"svc": cpu_seconds(svc.pid), "wk": cpu_tree(wk)}
                q0 = runq_wait_s(svc.pid)
                start = time.time() + 0.5
                r.set(GATE, f"{start:.6f}")
                t_start = time.perf_counter()
                limit = 0.5 + EVERY_S * (k + 1) + args.hold + args.grace
                samples = []  # (s since the start time, service CPU s, service run-queue wait s)
                spy: asyncio.subprocess.Process | None = None
                while cl.alive() and time.perf_counter() - t_start < limit:
                    now = time.time() - start
                    samples.append((now, cpu_seconds(svc.pid), runq_wait_s(svc.pid)))
                    if args.py_spy and spy is None and now >= EVERY_S * (k - 1):
                        # the service from the last second of reports to the last stream's end
                        spy = await asyncio.create_subprocess_exec(
                            args.py_spy, "record", "-p", str(svc.pid), "-r", "200", "-f", "raw",
                            "-d", str(math.ceil(EVERY_S + args.hold + 2)), "-o", args.py_spy_out,
                            "--nonblocking",
                            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                        )  # fmt: skip
                        out["py_spy_output"] = args.py_spy_out
                    await asyncio.sleep(0.05)
                if spy is not None:
                    await spy.wait()
                window = time.perf_counter() - t_start
                c1 = {"svc": cpu_seconds(svc.pid), "wk": cpu_tree(wk)}
                q1 = runq_wait_s(svc.pid)
                s1 = snapshot(r)
                m1 = await metrics(http, base)
                out["timed_out"] = cl.alive()
                out["service_by_second"] = by_second(samples)
                cl.stop(timeout=30)  # SIGTERM: a client still waiting writes what it saw
                if not exists(cfg["out"]):
                    tail = cl.log_path.read_text(errors="replace")[-2000:]
                    raise SystemExit(f"the client wrote no results:\n{tail}")
                res = read_json(cfg["out"])
                out.update(res)
                out["missing_final"] = res["missing_either"] + res["failed"]
                wall = window  # from the gate's SET (the jobs start 0.5 s later) to the end
                out["window_s"] = round(window, 2)
                out["written_per_s"] = round(res["written_seen"] / (EVERY_S * k), 1)
                out["service_cpu_frac"] = round((c1["svc"] - c0["svc"]) / wall, 3)
                out["workers_cpu_frac"] = round((c1["wk"] - c0["wk"]) / wall, 3)
                out["redis_cpu_frac"] = round((s1["cpu"] - s0["cpu"]) / wall, 3)
                out["service_runq_wait_frac"] = round((q1 - q0) / wall, 3)
                out["loadavg_1m"] = round(os.getloadavg()[0], 2)
                cs0, cs1 = s0["commandstats"], s1["commandstats"]

                def calls(*names: str) -> int:
                    return sum(
                        cs1.get(n, {}).get("calls", 0) - cs0.get(n, {}).get("calls", 0)
                        for n in names
                    )

                out["redis_script_calls"] = calls("evalsha", "eval", "fcall")
                out["redis_xread_calls"] = calls("xread")
                out["hub_events_read"] = int(
                    m1.get("tidings_hub_events_read_total", 0)
                    - m0.get("tidings_hub_events_read_total", 0)
                )
                out["sse_cut_total"] = int(
                    m1.get("tidings_sse_cuts_total", 0) - m0.get("tidings_sse_cuts_total", 0)
                )
        finally:
            await http.close()
            r.close()
            for proc in reversed(procs):
                proc.stop(timeout=20)
    return out


def ratio(name: str, v: float | None, target: float) -> str:
    if v is None or v != v:
        return f"{name} - (no samples)"
    return f"{name} {v:.1f} ms = {v / target:.2f}x target {target:.0f} ms"


def report(o: dict[str, Any]) -> str:
    def ms(d: dict[str, Any], p90: bool = True) -> str:
        if not d.get("samples"):
            return "-"
        mid = f" / p90 {d['p90_ms']}" if p90 else ""
        return (
            f"p50 {d['p50_ms']}{mid} / p99 {d['p99_ms']} / max {d['max_ms']} ms "
            f"(n={d['samples']:,})"
        )

    la = o["latency"]
    pi = o["progress_interval_s"]
    pi = "0.02 (default)" if pi is None else str(pi)
    placement = (
        "service on CPU 0, SSE clients on CPU 1 (taskset); workers, Redis, bench unpinned"
        if o["pinned"]
        else "nothing pinned"
    )
    rows = [
        ("placement", placement),
        (
            "workers",
            f"2 processes x concurrency {o['worker_concurrency']}, "
            f"{o['running_at_start']:,} jobs running at the start, progress_interval_s {pi}",
        ),
        (
            "watchers connected",
            f"{o['connected']:,} of {o['jobs'] * o['watchers_per_job']:,} "
            f"(failed {o['failed']}), in {o['connect_s']} s",
        ),
        (
            "delivered events",
            f"{o['delivered']:,} of {o['expected']:,} expected "
            f"({o['delivered'] / max(o['expected'], 1) * 100:.1f} %)",
        ),
        (
            "progress events written",
            f"{o['written_seen']:,} of {o['jobs'] * o['steps']:,} calls "
            f"(about {o['written_per_s']:,}/s; watchers short of K: {o['watchers_short_of_k']}, "
            f"duplicates {o['duplicates']})",
        ),
        ("latency call -> client", ms(la)),
        ("  call -> Redis (id, ms)", ms(o["call_to_redis"])),
        ("  Redis -> client", ms(o["redis_to_client"])),
        ("latency, final values", ms(o["latency_final"], p90=False)),
        ("  call -> Redis (id, ms)", ms(o["final_call_to_redis"], p90=False)),
        ("  Redis -> client", ms(o["final_redis_to_client"], p90=False)),
        (
            "p50 / p99 by step (ms)",
            ", ".join(f"{s}: {d['p50_ms']:g}/{d['p99_ms']:g}" for s, d in o["by_step"].items()),
        ),
        ("terminal after final", ms(o["terminal_after_final"], p90=False)),
        ("events over 60 ms", f"{la.get('over_60ms', 0):,}"),
        (
            "missing the final value",
            f"{o['missing_final']} watchers (no current == K: {o['missing_final_progress']}, "
            f"no succeeded: {o['missing_succeeded']}, not connected: {o['failed']}, "
            f"ended early: {o['lost_early']}, open at the end: {o['still_open']})",
        ),
        ("target p50", ratio("p50", la.get("p50_ms"), TARGET_P50_MS)),
        ("target p99", ratio("p99", la.get("p99_ms"), TARGET_P99_MS)),
        (
            "CPU (share of a core)",
            f"service {o['service_cpu_frac'] * 100:.0f} %, workers "
            f"{o['workers_cpu_frac'] * 100:.0f} %, Redis {o['redis_cpu_frac'] * 100:.0f} %, "
            f"client {o['client_cpu_frac'] * 100:.0f} % (window {o['window_s']} s)",
        ),
        (
            "waited for a CPU",
            f"service {o['service_runq_wait_frac'] * 100:.0f} %, client "
            f"{o['client_runq_wait_frac'] * 100:.0f} % of the window; "
            f"load average {o['loadavg_1m']}",
        ),
        (
            "Redis calls in window",
            f"{o['redis_script_calls']:,} script calls, {o['redis_xread_calls']:,} XREAD "
            f"(hub read {o['hub_events_read']:,} events)",
        ),
        (
            "service CPU per second",
            " ".join(f"{c * 100:.0f}%" for c, _ in o["service_by_second"])
            + " (seconds after the start time; waited for a CPU: "
            + " ".join(f"{q * 100:.0f}%" for _, q in o["service_by_second"])
            + ")",
        ),
        ("SSE watchers cut", str(o["sse_cut_total"])),
    ]
    title = (
        f"Progress to screen: J={o['jobs']:,} jobs x W={o['watchers_per_job']} watchers "
        f"x K={o['steps']} steps, 1 report/s per job"
    )
    if o["hold_s"]:
        title += f", jobs held {o['hold_s']:g} s after the last report"
    if o["timed_out"]:
        title += " (TIMED OUT: some streams never ended)"
    return table(rows, title)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, help="jobs running at once (default 1,000)")
    ap.add_argument("--watchers", type=int, help="SSE watchers per job (default 10)")
    ap.add_argument("--steps", type=int, help="progress reports per job, one per second (10)")
    ap.add_argument("--quick", action="store_true", help="100 jobs x 10 watchers x 5 steps")
    ap.add_argument("--redis-server", help="redis-server binary (default: on PATH)")
    ap.add_argument(
        "--progress-interval",
        type=float,
        help="workers.progress_interval_s for the workers (default: the config's, 0.02)",
    )
    ap.add_argument(
        "--hold", type=float, default=0.0, help="jobs stay running this long after the last report"
    )
    ap.add_argument("--py-spy", help="path to py-spy: profile the service over the last reports")
    ap.add_argument("--py-spy-out", default="/tmp/progress_latency-service.txt")
    ap.add_argument("--no-pin", action="store_true", help="no taskset pinning")
    ap.add_argument("--settle", type=float, default=1.0, help="after connecting, before the gate")
    ap.add_argument("--grace", type=float, default=30.0, help="wait for the last streams, s")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # the watcher process (config path)
    args = ap.parse_args()
    if args.client:
        return await client(args.client)
    quick = args.quick
    args.jobs = args.jobs or (100 if quick else 1_000)
    args.watchers = args.watchers or 10
    args.steps = args.steps or (5 if quick else 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it
    need = args.jobs * args.watchers + 200
    if need > hard:
        print(f"note: RLIMIT_NOFILE hard limit {hard} < {need}: some watchers will fail")
    o = await run(args)
    print(report(o), flush=True)
    print(json.dumps({"bench": "progress_latency", **o}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(asyncio.run(main()))
        sys.exit(130)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(uvloop.run(main()))
    sys.exit(130)
