"""Chaos: jobs under faults, then a Jepsen-style check per fault: lost, duplicated (ran more than
once), wrongly failed, unexpected, recovered.

    .venv/bin/python bench/chaos.py [--faults kill,hub-stall,redis-stop,oom] [--n 2000]
                                    [--kill-every 1.5] [--work-ms 200]

Faults (each on a private Redis server of its own, with its own workers and service):

  kill        worker processes SIGKILLed while they hold jobs, and one Redis SIGKILL + restart
              (AOF `appendfsync always`); 2 s lease
  hub-stall   the service process SIGSTOPped until the firehose (jobs.firehose_maxlen = 100)
              was trimmed far past its hub's cursor, with SSE watchers on 100 jobs and on the
              firehose; 2 s lease
  redis-stop  Redis SIGSTOPped for over twice the clients' socket timeout (3 s) while jobs run
              and HTTP clients submit; 15 s lease (longer than the freeze)
  oom         Redis held at `maxmemory` (noeviction) for 6 s while jobs run and HTTP clients
              submit, then memory freed; 2 s lease

Every run of a task is recorded (HINCRBY on a key outside Tidings' keys), so duplicates are
counted from what actually ran, not from what Tidings reports. "Lost": accepted (201 or
submitted by the Producer) and never finished, or gone. "Wrongly failed": failed (the task never
fails by itself). "Unexpected": more or fewer than one terminal event, or a run of a job nobody
submitted. HTTP submits carry idempotency keys, so a job whose submit answered 503 but landed
anyway is known by id ("landed after 503", not unexpected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Proc, env_for, free_port
from service.core.config import Config
from service.core.embedded import ServerProcess
from service.core.errors import NotFound
from service.core.states import TERMINAL
from service.core.wire import idempotent_job_id
from service.producer import Producer

RUNS = "chaos:runs"  # hash job id -> number of times the task body started
PREFIX = "bench"


def consumer_pending(r_info: list[dict[bytes, object]], pid: int) -> int:
    for c in r_info:
        name = c[b"name"] if b"name" in c else c.get("name")  # type: ignore[call-overload]
        text = name.decode() if isinstance(name, bytes) else str(name)
        if f":{pid}:" in text:
            return int(c.get(b"pending", c.get("pending", 0)))  # type: ignore[call-overload]
    return 0


@dataclass
class Outcome:
    """What one fault did to the jobs (and to the watchers, and the HTTP answers)."""

    fault: str
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    wrongly_failed: int = 0
    unexpected: int = 0
    recovered: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    """A private Redis server with the workers (and maybe the service) of one fault."""

    tmp: Path
    server: ServerProcess
    env: dict[str, str]
    workers: Proc
    producer: Producer
    service: Proc | None = None
    port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def deployment(
    name: str,
    *,
    processes: int,
    service: bool,
    persistent: bool = False,
    fsync: str = "everysec",
    **env_extra: str,
) -> AsyncIterator[Deployment]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server on PATH")
    tmp = Path(tempfile.mkdtemp(prefix=f"tidings-chaos-{name}-"))
    server = ServerProcess(tmp / "redis", binary=binary, persistent=persistent, fsync=fsync)
    server.start()
    env = env_for(server.url, TIDINGS_WORKERS_GRACE_S="1", **env_extra)
    argv = [sys.executable, "-m", "workers", "--tasks", "bench.tasks"]
    workers = Proc([*argv, "--processes", str(processes)], env, tmp / "workers.log", cwd=ROOT)
    cfg = config_from(env)
    p = Producer.from_url(server.url, config=cfg)
    d = Deployment(tmp, server, env, workers, p)
    try:
        if service:
            d.port = free_port()
            senv = dict(
                env,
                TIDINGS_HTTP_PORT=str(d.port),
                TIDINGS_WORKERS_TASKS="bench.tasks",
                TIDINGS_REDIS_EMBEDDED_DIR=str(tmp),
                TIDINGS_LOG_LEVEL=os.environ.get("CHAOS_LOG_LEVEL", "warning"),
            )
            d.service = Proc([sys.executable, "-m", "service"], senv, tmp / "service.log", ROOT)
            await until(lambda: ready(d.http), 30, "service ready")
        await until(lambda: workers_live(p, processes), 60, "workers registered")
        yield d
    finally:
        await p.close()
        workers.stop()
        if d.service is not None:
            d.service.stop()
        server.kill()
        if not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def config_from(env: dict[str, str]) -> Config:
    from service.core import config as config_mod

    return config_mod.load(os.devnull, environ={k: v for k, v in env.items() if "TIDINGS" in k})


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await check():
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


async def ready(base: str) -> bool:
    async with aiohttp.ClientSession() as s, s.get(base + "/readyz") as r:
        return r.status == 200


async def workers_live(p: Producer, n: int) -> bool:
    return len(await p.queries.workers()) >= n


async def settled(p: Producer, deadline: float) -> float:
    """Wait until the queue holds nothing unfinished (or the deadline); the time it took."""
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        try:
            q = (await p.queues()).get("default")
        except Exception:
            q = None
        if q is not None and q.queued + q.running + q.scheduled == 0:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def check(
    p: Producer, fault: str, accepted: set[str], maybe: set[str] | None = None
) -> Outcome:
    """The Jepsen-style check of every accepted job (and of what ran)."""
    maybe = maybe or set()
    runs = {k.decode(): int(v) for k, v in (await p.redis.hgetall(RUNS)).items()}
    out = Outcome(fault, jobs=len(accepted))
    landed = 0
    for jid in accepted | (maybe & set(runs)):
        try:
            job = await p.get(jid)
        except NotFound:
            out.lost += jid in accepted
            continue
        if jid not in accepted:
            landed += 1
        terminals = [e for e in await p.events(jid) if e.type in TERMINAL]
        if job.state == "failed":
            out.wrongly_failed += 1
        elif job.state != "succeeded":
            out.lost += 1  # never finished
        elif len(terminals) != 1:
            out.unexpected += 1
        if runs.get(jid, 0) > 1:
            out.duplicated += 1
        if job.attempt > 1 and job.state == "succeeded":
            out.recovered += 1
    out.unexpected += sum(1 for j in runs if j not in accepted and j not in maybe)
    if maybe:
        out.notes["landed after 503"] = landed
    return out


async def duplicated_progress(p: Producer, ids: set[str]) -> int:
    """Progress events written twice (a re-sent write applied again)."""
    dups = 0
    for jid in ids:
        seen = set()
        with contextlib.suppress(NotFound):
            for e in await p.events(jid):
                if e.type == "progress":
                    d = e.decode()
                    key = (d.attempt, getattr(d, "current", None))
                    dups += key in seen
                    seen.add(key)
    return dups


class Submitters:
    """HTTP clients submitting one job at a time (each with an idempotency key), counting the
    answers by status."""

    def __init__(self, d: Deployment, payload: dict[str, Any], clients: int = 4) -> None:
        self.d = d
        self.payload = payload
        self.clients = clients
        self.statuses: dict[int, int] = {}
        self.accepted: set[str] = set()
        self.unsure: set[str] = set()  # 503: may or may not have landed
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._n = 0

    async def _one(self, s: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            self._n += 1
            key = f"chaos-{self._n}"
            body = {"task": "chaos.work", "payload": self.payload, "idempotency_key": key}
            try:
                async with s.post(self.d.http + "/api/jobs", json=body) as r:
                    status = r.status
                    if status in (200, 201):
                        self.accepted.add((await r.json())["id"])
            except aiohttp.ClientError:
                status = 0
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status not in (200, 201):
                self.unsure.add(idempotent_job_id(PREFIX, key))
                await asyncio.sleep(0.05)

    def start(self, s: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._one(s)) for _ in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


# -- the faults ------------------------------------------------------------------------------------


async def fault_kill(args: argparse.Namespace) -> Outcome:
    """Worker SIGKILLs while they hold jobs, and one Redis SIGKILL + restart (fsync always)."""
    async with deployment(
        "kill",
        processes=args.processes,
        service=False,
        persistent=True,
        fsync="always",
        TIDINGS_JOBS_LEASE_S="2",
    ) as d:
        p, server, workers = d.producer, d.server, d.workers
        kills: list[float] = []
        in_flight_at_kills: list[int] = []
        redis_restarted_at = 0.0
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
        out = await check(p, "kill", accepted)
        longest_wait = 0.0
        for jid in accepted:
            for e in await p.events(jid):
                if e.type == "retrying" and b"WorkerLost" in e.body:
                    ts = e.key[0] / 1000
                    before = [k for k in kills if k <= ts]
                    if before:
                        longest_wait = max(longest_wait, ts - before[-1])
        out.seconds = round(elapsed, 1)
        out.notes = {
            "worker kills": len(kills),
            "in flight at kills": sum(in_flight_at_kills),
            "redis restarts": 1 if redis_restarted_at else 0,
            "longest reclaim wait s": round(longest_wait, 2),
        }
        return out


async def fault_hub_stall(args: argparse.Namespace) -> Outcome:
    """The service frozen until the firehose was trimmed past its hub's cursor; SSE watchers
    connected throughout on 100 jobs and on the firehose."""
    async with deployment(
        "hub-stall",
        processes=args.processes,
        service=True,
        TIDINGS_JOBS_LEASE_S="2",
        TIDINGS_JOBS_FIREHOSE_MAXLEN="100",
    ) as d:
        p = d.producer
        assert d.service is not None
        n = max(args.n // 2, 200)
        jobs = await p.submit_many(
            [("chaos.work", {"ms": args.work_ms * 5, "steps": 10}) for _ in range(n)]
        )
        accepted = {j.id for j in jobs}
        watched = [j.id for j in jobs[:100]]
        got: dict[str, list[tuple[str | None, str]]] = {j: [] for j in watched}
        ended: set[str] = set()
        fire_events: list[tuple[str | None, str, str]] = []
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        # no connection limit: every watcher holds one for good (the default limit is 100)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:

            async def watch(jid: str) -> None:
                async with s.get(f"{d.http}/api/jobs/{jid}/events") as r:
                    async for eid, typ, _ in sse(r):
                        got[jid].append((eid, typ))
                ended.add(jid)

            async def firehose() -> None:
                async with s.get(f"{d.http}/api/events") as r:
                    async for eid, typ, data in sse(r):
                        fire_events.append((eid, typ, data))

            fire = asyncio.create_task(firehose())
            tasks = [asyncio.create_task(watch(j)) for j in watched]
            t0 = time.monotonic()
            await asyncio.sleep(1.0)  # watchers live, work under way
            head = await p.redis.xrevrange(p.keys.fire(0), count=1)
            head_n = int(head[0][1][b"n"]) if head else 0
            freeze(d.service.pid)
            try:
                stalled = time.monotonic()
                while time.monotonic() - stalled < 30:
                    first = await p.redis.xrange(p.keys.fire(0), count=1)
                    if first and int(first[0][1][b"n"]) > head_n + 1000:
                        break  # trimmed well past where the hub was
                    await asyncio.sleep(0.1)
                stall_s = time.monotonic() - stalled
            finally:
                thaw(d.service.pid)
            print(f"  service frozen {stall_s:.1f}s (firehose trimmed past its hub)", flush=True)
            await settled(p, time.monotonic() + args.deadline)
            await asyncio.wait(tasks, timeout=30)
            for t in tasks:
                t.cancel()
            # the firehose client reads what is left (until quiet for 2 s)
            quiet_since, seen = time.monotonic(), len(fire_events)
            while time.monotonic() - quiet_since < 2 and time.monotonic() - t0 < args.deadline:
                await asyncio.sleep(0.2)
                if len(fire_events) != seen:
                    quiet_since, seen = time.monotonic(), len(fire_events)
            fire.cancel()
            elapsed = time.monotonic() - t0
        out = await check(p, "hub-stall", accepted)
        missed = dup = snaps = 0
        for jid in watched:
            stored = [e.id.decode() for e in await p.events(jid)]
            ids = [eid for eid, typ in got[jid] if typ != "snapshot"]
            snaps += sum(typ == "snapshot" for _, typ in got[jid])
            dup += len(ids) - len(set(ids))
            if not any(typ == "snapshot" for _, typ in got[jid]):
                missed += len(set(stored) - set(ids))
        fire_snaps = [json.loads(x).get("reason") for _, typ, x in fire_events if typ == "snapshot"]
        out.seconds = round(elapsed, 1)
        out.notes = {
            "frozen s": round(stall_s, 1),
            "watchers": len(watched),
            "events missed": missed,
            "events twice": dup,
            "watcher snapshots": snaps,
            "watchers hung": len(watched) - len(ended),
            "firehose snapshots": fire_snaps,
        }
        return out


async def fault_redis_stop(args: argparse.Namespace) -> Outcome:
    """Redis frozen for over twice the socket timeout under load and HTTP submits."""
    async with deployment(
        "redis-stop",
        processes=args.processes,
        service=True,
        TIDINGS_REDIS_SOCKET_TIMEOUT_S="3",
        TIDINGS_JOBS_LEASE_S="15",
    ) as d:
        p = d.producer
        assert d.server.proc is not None
        n = max(args.n // 2, 200)
        payload = {"ms": args.work_ms, "steps": 5}
        jobs = await p.submit_many([("chaos.work", payload) for _ in range(n)])
        subs = Submitters(d, payload)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            subs.start(s)
            t0 = time.monotonic()
            await asyncio.sleep(1.0)
            freeze(d.server.proc.pid)
            try:
                await asyncio.sleep(7.0)  # the fault itself: over twice the 3 s socket timeout
            finally:
                thaw(d.server.proc.pid)
            print("  redis frozen 7.0s (socket timeout 3 s)", flush=True)
            await asyncio.sleep(2.0)
            await subs.stop()
        await settled(p, time.monotonic() + args.deadline)
        elapsed = time.monotonic() - t0
        accepted = {j.id for j in jobs} | subs.accepted
        out = await check(p, "redis-stop", accepted, subs.unsure)
        out.seconds = round(elapsed, 1)
        out.notes["http submits"] = dict(sorted(subs.statuses.items()))
        out.notes["progress written twice"] = await duplicated_progress(p, accepted)
        return out


async def fault_oom(args: argparse.Namespace) -> Outcome:
    """Redis at maxmemory (noeviction) for 6 s under load and HTTP submits, then freed."""
    async with deployment(
        "oom", processes=args.processes, service=True, TIDINGS_JOBS_LEASE_S="2"
    ) as d:
        p = d.producer
        n = max(args.n // 2, 200)
        payload = {"ms": args.work_ms, "steps": 5}
        kids = set(d.workers.children(want=args.processes))
        jobs = await p.submit_many([("chaos.work", payload) for _ in range(n)])
        subs = Submitters(d, payload)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            subs.start(s)
            t0 = time.monotonic()
            await asyncio.sleep(1.0)
            used = int((await p.redis.info("memory"))["used_memory"])
            await p.redis.config_set("maxmemory", used // 2)
            try:
                await asyncio.sleep(6.0)  # the fault itself: full for 3 leases
            finally:
                await p.redis.config_set("maxmemory", 0)
            print("  redis full for 6.0s (maxmemory, noeviction)", flush=True)
            await asyncio.sleep(2.0)
            await subs.stop()
        await settled(p, time.monotonic() + args.deadline)
        elapsed = time.monotonic() - t0
        accepted = {j.id for j in jobs} | subs.accepted
        out = await check(p, "oom", accepted, subs.unsure)
        out.seconds = round(elapsed, 1)
        out.notes["http submits"] = dict(sorted(subs.statuses.items()))
        out.notes["worker processes restarted"] = len(kids - set(d.workers.children()))
        return out


async def sse(r: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, str, str]]:
    """(id, event, data) of an SSE response, until it ends."""
    cur: dict[str, str] = {}
    async for raw in r.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if "event" in cur or "data" in cur:
                yield cur.get("id"), cur.get("event", "message"), cur.get("data", "")
            cur = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            cur[name] = value[1:] if value.startswith(" ") else value


FAULTS = {
    "kill": fault_kill,
    "hub-stall": fault_hub_stall,
    "redis-stop": fault_redis_stop,
    "oom": fault_oom,
}


def print_table(outcomes: list[Outcome]) -> None:
    cols = ["fault", "jobs", "lost", "duplicated", "wrongly failed", "unexpected", "recovered"]
    rows = [
        [o.fault, o.jobs, o.lost, o.duplicated, o.wrongly_failed, o.unexpected, o.recovered]
        for o in outcomes
    ]
    widths = [max(len(str(x)) for x in [c] + [r[i] for r in rows]) for i, c in enumerate(cols)]
    print()
    print("  " + "  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))
    print()
    for o in outcomes:
        notes = ", ".join(f"{k}: {v}" for k, v in o.notes.items())
        print(f"  {o.fault}: {o.seconds}s; {notes}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--kill-every", type=float, default=1.5)
    ap.add_argument("--kills", type=int, default=8, help="worker kills (each while it holds jobs)")
    ap.add_argument("--work-ms", type=int, default=200)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=300)
    args = ap.parse_args()
    outcomes = []
    for name in args.faults.split(","):
        print(f"{name}:", flush=True)
        outcomes.append(await FAULTS[name](args))
    print_table(outcomes)
    print(json.dumps([o.__dict__ for o in outcomes]))


if __name__ == "__main__":
    asyncio.run(main())
