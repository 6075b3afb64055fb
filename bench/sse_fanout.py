"""SSE fan-out: W watchers on one service process, events at a set rate, measured end to end.

    .venv/bin/python bench/sse_fanout.py                       # the three scenarios below
    .venv/bin/python bench/sse_fanout.py --watchers 10000 --jobs 1000 --rate 1000   # 10k/s out
    .venv/bin/python bench/sse_fanout.py --watchers 10000 --jobs 1 --rate 10        # one hot job
    .venv/bin/python bench/sse_fanout.py --watchers 10000 --jobs 1000 --rate 0      # idle memory

A private redis-server (no persistence, a free port) and `python -m service` (pinned to CPU 0 with
taskset; TIDINGS_SSE_MAX_CONNECTIONS raised) are started here and stopped here by their pids. J
jobs are submitted on a queue no worker serves, fetched with XREADGROUP and started with the
`start` script op as consumer `bench-sse`; a producer process then writes their progress with
the `apply` op (`service.core.scripts.Ops`) at the given total rate (one call per 10 ms tick,
round robin over the jobs, each write with its run and sequence number), exactly what a
worker's writer does. W watchers (a cheap
raw-asyncio Protocol, this process pinned to CPU 1) follow `GET /api/jobs/{id}/events`, watcher
i on job i mod J.

Printed, for a measured window after a warm-up:
- watchers held (connected, and still connected at the end; the service's own gauge);
- events delivered (progress events received by all watchers) against rate x W/J;
- latency from the event's `ts` (Redis TIME, ms precision, so up to 1 ms high) to receipt, and
  from the producer's own time.time() (carried in the event's message) to receipt, for the first
  event of every socket read (so an upper bound for the others in that read); above 10,000
  deliveries/s only one read in rate x W/J / 10,000 is timed (a uniform sample), so the client
  stays off the critical path;
- service RSS per watcher: VmRSS after connecting all W minus before, / W;
- Redis connections of the service: its TCP sockets to the Redis port (/proc/<pid>/fd and
  /proc/net/tcp), and INFO connected_clients minus this process's own;
- service CPU seconds (utime + stime) per 1,000 delivered events;
- /healthz round trip every 100 ms during the window (a view of event-loop stalls: heartbeats
  are staggered over sse.heartbeat_s, so none should stall every watcher at once).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
import redis.exceptions
from common import Proc, cpu_seconds, env_for, free_port, pct, private_redis, table

from service.core.keys import Keys
from service.core.scripts import GROUP, Entry, Limits, Ops, Write
from service.core.tasks import TaskSpec
from service.core.wire import SProgress, encode_stored
from service.producer import Producer, SubmitRequest

PREFIX = "bench"
QUEUE = "sse-bench"  # served by no worker: the jobs stay running, written to by us
TICK_S = 0.01


# -- the watchers ------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.events = 0
        self.reads = 0
        self.recording = False
        self.lat_ts = array("d")  # ms, from the event's ts
        self.lat_send = array("d")  # ms, from the producer's time.time()
        self.connected = 0
        self.failed = 0
        self.lost = 0
        self.heartbeats = 0
        self.lat_every = 1  # time one read in this many (keeps the client cheap at 100k/s)
        self._day: dict[bytes, float] = {}

    def ts_epoch(self, ts: bytes) -> float:
        """'2026-11-28T15:20:00.123Z' -> epoch seconds (the seconds part cached)."""
        head = ts[:19]
        base = self._day.get(head)
        if base is None:
            t = time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S")
            base = self._day[head] = float(calendar.timegm(t))
        return base + int(ts[20:23]) / 1000.0


MARK = b"event: progress\n"
TS = b'"ts":"'
MSG = b'"message":"'


class Watch(asyncio.Protocol):
    """One SSE GET, hand-written; counts progress events, times the first one of each read."""

    __slots__ = ("head", "ready", "req", "st", "tail", "tr")

    def __init__(self, st: Stats, req: bytes, ready: asyncio.Future[bool]) -> None:
        self.st = st
        self.req = req
        self.ready: asyncio.Future[bool] | None = ready
        self.head = b""
        self.tail = b""
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        st = self.st
        if self.ready is not None:
            self.head += data
            k = self.head.find(b"\r\n\r\n")
            if k < 0:
                return
            ok = self.head.startswith(b"HTTP/1.1 200")
            data = self.head[k + 4 :]
            self.head = b""
            ready, self.ready = self.ready, None
            if not ready.done():
                ready.set_result(ok)
            if not ok:
                return
        buf = self.tail + data if self.tail else data
        self.tail = buf[-(len(MARK) - 1) :]
        if b": hb" in data:
            st.heartbeats += 1
        n = buf.count(MARK)
        if not n or not st.recording:
            return
        st.reads += 1
        st.events += n
        if st.reads % st.lat_every:
            return
        now = time.time()
        i = buf.find(MARK)
        j = buf.find(MSG, i)
        if j > 0:
            e = buf.find(b'"', j + len(MSG))
            with contextlib.suppress(ValueError):
                st.lat_send.append((now - float(buf[j + len(MSG) : e])) * 1000)
        j = buf.find(TS, i)
        if j > 0 and len(buf) >= j + len(TS) + 24:
            with contextlib.suppress(ValueError):
                ts = st.ts_epoch(buf[j + len(TS) : j + len(TS) + 24])
                st.lat_ts.append((now - ts) * 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        self.st.lost += 1
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)


P = TypeVar("P", bound=asyncio.Protocol)


async def connect_all(
    port: int,
    jobs: list[str],
    n: int,
    counts: Any,
    make: Callable[[bytes, asyncio.Future[bool]], P],
    concurrency: int = 256,
) -> list[P]:
    """Open n raw SSE streams on the jobs in turn, `concurrency` at a time; `make(request,
    ready)` builds each stream's protocol, which sends the request and settles `ready` (True
    once answered 200). Counted in `counts.connected` / `counts.failed`."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    protos: list[P] = []

    async def one(i: int) -> None:
        req = (
            b"GET /api/jobs/%s/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Accept: text/event-stream\r\n\r\n" % (jobs[i % len(jobs)].encode(), port)
        )
        async with sem:
            ready: asyncio.Future[bool] = loop.create_future()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: make(req, ready), "127.0.0.1", port), 30
                )
                protos.append(proto)
                ok = await asyncio.wait_for(ready, 30)
            except (OSError, TimeoutError):
                ok = False
            if ok:
                counts.connected += 1
            else:
                counts.failed += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return protos


# -- the producer ------------------------------------------------------------------------------


class Driver:
    """Submits J jobs, fetches and starts them as consumer `bench-sse` (the start script checks
    that the consumer holds the entry), and writes their progress with the `apply` op."""

    CONSUMER = "bench-sse"

    def __init__(self, r: Any) -> None:
        self.r = r
        self.keys = Keys(PREFIX, 1)
        self.limits = Limits()
        self.ops = Ops(self.keys, self.limits)
        self.runs: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.seq: dict[str, int] = {}  # the last write sequence number per job (per run)

    async def make_jobs(self, n: int) -> list[str]:
        # the task is known to this producer only (no worker has it: nobody serves QUEUE)
        spec = TaskSpec("bench.sse", _never_run, dict, True, None, None, QUEUE)
        p = Producer(self.r, keys=self.keys, registry={"bench.sse": spec})
        jobs = await p.submit_many(
            [SubmitRequest(task="bench.sse", payload={}, queue=QUEUE) for _ in range(n)]
        )
        ids = [j.id for j in jobs]
        want = set(ids)
        stream = self.keys.queue(0, QUEUE)
        with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: it exists
            await self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        entries: list[Entry] = []
        while len(entries) < n:
            resp = await self.r.xreadgroup(GROUP, self.CONSUMER, {stream: ">"}, count=n)
            if not resp:
                break
            for _, rows in resp:
                for eid, f in rows:
                    jid = f[b"j"].decode()
                    if jid in want:
                        entries.append(Entry(jid, QUEUE, eid.decode()))
        minute = int(time.time() // 60)
        for i in range(0, len(entries), 200):
            call = self.ops.start(0, self.CONSUMER, entries[i : i + 200], minute)
            for row in await call.run(self.r):
                assert row.verdict == "run", row
                self.runs[row.id] = row.run
                self.attempts[row.id] = row.attempt
                self.seq[row.id] = 0
        assert want <= set(self.runs), len(want - set(self.runs))
        return ids

    def progress(self, jid: str, current: int, message: str) -> Write:
        self.seq[jid] += 1
        body = encode_stored(SProgress(self.attempts[jid], current, None, message))
        return Write(
            "p", jid, QUEUE, self.runs[jid], self.seq[jid], body, str(current), "", message
        )

    async def history(self, jobs: list[str], n: int) -> None:
        """n progress events per job before anyone watches (each watcher replays them)."""
        for k in range(1, n + 1):
            for i in range(0, len(jobs), 500):
                writes = [self.progress(jid, k, "history") for jid in jobs[i : i + 500]]
                minute = int(time.time() // 60)
                res = await self.ops.apply(0, writes, minute).run(self.r)
                assert set(res) == {"ok"}, set(res)

    async def fired(self) -> int:
        """Events ever added to the firehose (XINFO STREAM entries-added)."""
        info = await self.r.xinfo_stream(self.keys.fire(0))
        return int(info["entries-added"])


async def _never_run(ctx: Any, payload: dict[str, Any]) -> None:
    raise AssertionError("bench.sse jobs are driven by the bench, never run")


# The producer runs in its own process, so that its schedule does not depend on how busy this
# process is reading 10,000 sockets: events go out on time, one script call per tick.
PRODUCER = """
import json, sys, time
import redis
from service.core.keys import Keys
from service.core.scripts import Limits, Ops, Write
from service.core.wire import SProgress, encode_stored

cfg = json.loads(sys.stdin.read())
r = redis.Redis.from_url(cfg["url"])
ops = Ops(Keys(cfg["prefix"], 1), Limits())
jobs, runs, attempts, seq = cfg["jobs"], cfg["runs"], cfg["attempts"], cfg["seq"]
queue, rate = cfg["queue"], cfg["rate"]
interval = max(cfg["tick_s"], 1.0 / rate)
per_tick = rate * interval
acc, i, behind, refused = 0.0, 0, 0.0, 0
nxt = time.monotonic()
until = nxt + cfg["seconds"]
while time.monotonic() < until:
    acc += per_tick
    n = int(acc)
    acc -= n
    if n:
        sent = "%.6f" % time.time()
        writes = []
        for _ in range(n):
            jid = jobs[i % len(jobs)]
            i += 1
            seq[jid] += 1
            body = encode_stored(SProgress(attempts[jid], i, None, sent))
            writes.append(Write("p", jid, queue, runs[jid], seq[jid], body, str(i), "", sent))
        res = ops.apply(0, writes, int(time.time() // 60)).run_sync(r)
        refused += sum(1 for x in res if x != "ok")
    nxt += interval
    delay = nxt - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        behind = max(behind, -delay)
        if delay < -1.0:
            nxt = time.monotonic()  # a late tick is not made up for beyond one second
print(json.dumps({"events": i, "behind_max_s": behind, "refused": refused}))
"""


async def produce(url: str, jobs: list[str], d: Driver, rate: float, s: float) -> Any:
    cfg = {"url": url, "prefix": PREFIX, "jobs": jobs, "runs": d.runs, "rate": rate}
    cfg.update(attempts=d.attempts, seq=d.seq, queue=QUEUE, seconds=s, tick_s=TICK_S)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PRODUCER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env_for(url),
    )
    out, _ = await proc.communicate(json.dumps(cfg).encode())
    return json.loads(out)


# -- measuring the service ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tcp_conns_to(pid: int, port: int) -> int:
    """TCP sockets of process `pid` connected to 127.0.0.1:`port` (its Redis connections)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    n = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as f:
            next(f)
            for line in f:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if remote_port == port and cols[3] == "01" and cols[9] in inodes:
                    n += 1
    return n


def runq_wait_s(pid: int) -> float:
    """Seconds the threads of `pid` spent runnable but waiting for a CPU (/proc schedstat): on a
    shared machine, how much other work took the core away."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    return total / 1e9


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The service's /metrics, each family summed over its labels."""
    async with http.get(base + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            # a metric with labels: the sum over its series
            series, _, value = line.rpartition(" ")
            name = series.partition("{")[0]
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(value)
    return out


PROBE = """
import http.client, json, sys, time
port, window = int(sys.argv[1]), float(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
out, end = [], time.monotonic() + window
while time.monotonic() < end:
    t = time.perf_counter()
    c.request("GET", "/healthz")
    c.getresponse().read()
    out.append((time.perf_counter() - t) * 1000)
    time.sleep(0.1)
print(json.dumps(out))
"""


async def probe(port: int, window: float) -> list[float]:
    """GET /healthz every 100 ms from a separate process (so this process's own busy loop does
    not count): the service's response time, a view of its event-loop stalls."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, str(port), str(window), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return list(json.loads(out)) if out.strip() else []


def lat(ms: array[float]) -> dict[str, Any]:
    v = list(ms)
    if not v:
        return {"samples": 0}
    return {
        "samples": len(v),
        "p50_ms": round(pct(v, 0.5), 2),
        "p99_ms": round(pct(v, 0.99), 2),
        "max_ms": round(max(v), 2),
    }


# -- one run -----------------------------------------------------------------------------------


def pin(cpu: int) -> list[str]:
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(cpu)]


async def run(args: argparse.Namespace, w: int, j: int, rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {"watchers": w, "jobs": j, "rate": rate}
    with private_redis() as server, tempfile.TemporaryDirectory(prefix="sse-fanout-") as tmp:
        logdir = Path(tmp)
        port = free_port()
        env = env_for(
            server.url,
            TIDINGS_HTTP_HOST="127.0.0.1",
            TIDINGS_HTTP_PORT=str(port),
            TIDINGS_WORKERS_TASKS="workers.demo",
            TIDINGS_SSE_MAX_CONNECTIONS=str(max(w + 1000, 10_000)),
            TIDINGS_REDIS_EMBEDDED_DIR=str(logdir),
        )
        svc = Proc([*pin(0), sys.executable, "-m", "service"], env, logdir / "service.log", logdir)
        if pin(1):
            os.sched_setaffinity(0, {1})
        base = f"http://127.0.0.1:{port}"
        r = aioredis.Redis.from_url(server.url)
        http = aiohttp.ClientSession()
        st = Stats()
        protos: list[Watch] = []
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if not svc.alive() or time.monotonic() > deadline:
                    raise SystemExit("service did not start:\n" + svc.log_path.read_text()[-2000:])
                await asyncio.sleep(0.1)
            d = Driver(r)
            jobs = await d.make_jobs(j)
            if args.history:
                await d.history(jobs, args.history)
            out["history_events_per_job"] = args.history
            rss0 = rss_kb(svc.pid)
            t0 = time.perf_counter()
            protos = await connect_all(port, jobs, w, st, lambda req, ready: Watch(st, req, ready))
            out["connect_s"] = round(time.perf_counter() - t0, 2)
            out["connected"] = st.connected
            out["failed"] = st.failed
            await asyncio.sleep(args.settle)
            rss1 = rss_kb(svc.pid)
            out["service_rss_mb_before"] = round(rss0 / 1024, 1)
            out["service_rss_mb_after_connect"] = round(rss1 / 1024, 1)
            out["rss_kb_per_watcher"] = round((rss1 - rss0) / max(st.connected, 1), 2)
            m0 = await metrics(http, base)
            out["service_gauge_watchers"] = int(m0.get("tidings_sse_watchers", -1))
            out["redis_conns_service"] = tcp_conns_to(svc.pid, server.port)
            info = await r.info("clients")
            own = tcp_conns_to(os.getpid(), server.port)
            out["redis_connected_clients_minus_bench"] = int(info["connected_clients"]) - own

            # at 100k deliveries/s the client's core is the limit: time 1 read in 10 (a uniform
            # sample of reads, so the percentiles stand)
            st.lat_every = max(1, int(rate * w / max(j, 1)) // 10_000)
            out["latency_sampled_1_in"] = st.lat_every
            loop = asyncio.get_running_loop()
            window = args.duration if rate else args.idle_window
            warm = args.warmup if rate else 0.0
            start = loop.time()
            until = start + warm + window + 0.5
            producer = (
                asyncio.create_task(produce(server.url, jobs, d, rate, until - start))
                if rate
                else None
            )
            await asyncio.sleep(warm)
            prober = asyncio.create_task(probe(port, window))
            spy = None
            if args.py_spy:
                # a profile of the service over the window (collapsed stacks, for a flame graph)
                out["py_spy_output"] = f"{args.py_spy_out}-w{w}-j{j}-r{int(rate)}.txt"
                spy = await asyncio.create_subprocess_exec(
                    args.py_spy, "record", "-p", str(svc.pid), "-d", str(int(window)), "-r", "200",
                    "-f", "raw", "-o", out["py_spy_output"], "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            cpu0, c0 = cpu_seconds(svc.pid), os.times()
            wait0, bwait0 = runq_wait_s(svc.pid), runq_wait_s(os.getpid())
            pub0, hb0, lost0 = await d.fired(), st.heartbeats, st.lost
            t_window = time.perf_counter()
            st.recording = True
            await asyncio.sleep(window)
            st.recording = False
            wall = time.perf_counter() - t_window
            cpu1, c1 = cpu_seconds(svc.pid), os.times()
            wait1, bwait1 = runq_wait_s(svc.pid), runq_wait_s(os.getpid())
            published = await d.fired() - pub0
            probes = await prober
            if spy is not None:
                await spy.wait()
            made = await producer if producer is not None else {}
            behind = made.get("behind_max_s", 0.0)
            out["producer_writes_refused"] = made.get("refused", 0)
            m1 = await metrics(http, base)
            out["window_s"] = round(wall, 2)
            out["published_per_s"] = round(published / wall, 1)
            out["producer_behind_max_ms"] = round(behind * 1000, 1)
            out["delivered"] = st.events
            out["delivered_per_s"] = round(st.events / wall, 1)
            out["expected_per_s"] = round(published / wall * w / j, 1)
            out["latency_from_ts"] = lat(st.lat_ts)
            out["latency_from_send"] = lat(st.lat_send)
            out["events_per_read"] = round(st.events / st.reads, 2) if st.reads else None
            out["service_cpu_s"] = round(cpu1 - cpu0, 3)
            out["service_cpu_frac"] = round((cpu1 - cpu0) / wall, 3)
            out["service_cpu_ms_per_1k_delivered"] = (
                round((cpu1 - cpu0) / st.events * 1e6, 2) if st.events else None
            )
            bench_cpu = (c1.user + c1.system) - (c0.user + c0.system)
            out["bench_cpu_frac"] = round(bench_cpu / wall, 3)
            out["service_runq_wait_frac"] = round((wait1 - wait0) / wall, 3)
            out["bench_runq_wait_frac"] = round((bwait1 - bwait0) / wall, 3)
            out["loadavg_1m"] = round(os.getloadavg()[0], 2)
            out["healthz_rtt"] = lat(array("d", probes))
            out["heartbeats_received"] = st.heartbeats - hb0
            out["lost_during_window"] = st.lost - lost0
            out["service_gauge_watchers_end"] = int(m1.get("tidings_sse_watchers", -1))
            out["service_cut_total"] = int(m1.get("tidings_sse_cuts_total", -1))
            out["hub_events_read"] = int(
                m1.get("tidings_hub_events_read_total", 0)
                - m0.get("tidings_hub_events_read_total", 0)
            )
            out["service_rss_mb_end"] = round(rss_kb(svc.pid) / 1024, 1)
            out["redis_conns_service_end"] = tcp_conns_to(svc.pid, server.port)
        finally:
            for p in protos:
                if p.tr is not None:
                    p.tr.abort()
            await http.close()
            await r.aclose()
            svc.stop(timeout=20)
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return out


def report(o: dict[str, Any]) -> str:
    lt, ls, hz = o["latency_from_ts"], o["latency_from_send"], o["healthz_rtt"]

    def ms(d: dict[str, Any]) -> str:
        if not d.get("samples"):
            return "-"
        return f"p50 {d['p50_ms']} / p99 {d['p99_ms']} / max {d['max_ms']} ms (n={d['samples']})"

    rows = [
        (
            "watchers held",
            f"{o['connected']:,} of {o['watchers']:,} (failed {o['failed']}), "
            f"{o['service_gauge_watchers_end']:,} at the end, {o['lost_during_window']} lost",
        ),
        ("connect all", f"{o['connect_s']} s"),
        ("published events/s", f"{o['published_per_s']:,} (target {o['rate']:,})"),
        (
            "delivered events/s",
            f"{o['delivered_per_s']:,} (expected {o['expected_per_s']:,}; "
            f"{o['delivered']:,} in {o['window_s']} s)",
        ),
        ("latency from ts", ms(lt)),
        ("latency from send", ms(ls)),
        (
            "service RSS",
            f"{o['service_rss_mb_before']} -> {o['service_rss_mb_after_connect']} "
            f"-> {o['service_rss_mb_end']} MB",
        ),
        ("RSS per watcher", f"{o['rss_kb_per_watcher']} KB"),
        (
            "Redis conns (service)",
            f"{o['redis_conns_service']} after connect, "
            f"{o['redis_conns_service_end']} at the end "
            f"(INFO clients - bench: {o['redis_connected_clients_minus_bench']})",
        ),
        (
            "service CPU",
            f"{o['service_cpu_frac'] * 100:.0f}% of a core "
            f"(waited for a CPU {o['service_runq_wait_frac'] * 100:.0f}% of the time)",
        ),
        (
            "CPU per 1k delivered",
            f"{o['service_cpu_ms_per_1k_delivered']} ms"
            if o["service_cpu_ms_per_1k_delivered"] is not None
            else "-",
        ),
        (
            "bench CPU",
            f"{o['bench_cpu_frac'] * 100:.0f}% of a core (waited "
            f"{o['bench_runq_wait_frac'] * 100:.0f}%; load average {o['loadavg_1m']})",
        ),
        ("/healthz round trip", ms(hz)),
        ("heartbeats received", f"{o['heartbeats_received']:,}"),
        ("cut slow watchers", str(o["service_cut_total"])),
    ]
    title = f"SSE fan-out: W={o['watchers']:,} J={o['jobs']:,} rate={o['rate']:,}/s"
    if o["history_events_per_job"]:
        title += f", {o['history_events_per_job']} events per job already written"
    return table(rows, title)


SCENARIOS = [(10_000, 1_000, 1_000.0), (10_000, 1, 10.0), (10_000, 1_000, 0.0)]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int)
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--rate", type=float, help="events/s in total; 0 = idle")
    ap.add_argument("--duration", type=float, default=15.0, help="measured window, s")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--settle", type=float, default=2.0, help="after connecting, before RSS")
    ap.add_argument(
        "--idle-window", type=float, default=17.0, help="idle: a heartbeat period and a bit"
    )
    ap.add_argument(
        "--history", type=int, default=0, help="progress events per job written before connecting"
    )
    ap.add_argument("--py-spy", help="path to py-spy: profile the service during the window")
    ap.add_argument("--py-spy-out", default="/tmp/sse_fanout-profile")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the service inherits it
    if args.watchers or args.jobs or args.rate is not None:
        runs = [(args.watchers or 10_000, args.jobs or 1_000, args.rate or 0.0)]
        if args.rate is None:
            runs = [(runs[0][0], runs[0][1], 1_000.0)]
    else:
        runs = SCENARIOS
    need = max(w for w, _, _ in runs) + 200
    if need > hard:
        print(f"note: RLIMIT_NOFILE hard limit {hard} < {need}: some watchers will fail")
    for w, j, rate in runs:
        o = await run(args, w, j, rate)
        print(report(o), flush=True)
        print(json.dumps({"bench": "sse_fanout", **o}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
