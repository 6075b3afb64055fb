"""Past one machine, measured: one Redis node against a 3-master Redis Cluster, a master killed
under load, and what a master kill loses with `redis.wait_replicas` 0 and 1 under a lagging
replica.

    .venv/bin/python bench/cluster.py                  # everything, ~4-6 min on 2 cores
    .venv/bin/python bench/cluster.py --quick          # smaller sizes
    .venv/bin/python bench/cluster.py --only spread,throughput,chaos,durability

Every server (single node, 3+3 cluster, a ledger) is started here on free loopback ports
(tests/topology.py; never the Redis on 6379) and stopped here, as is every service and worker
process (by pid). Sections:

* **spread** — 16 partitions over the three masters (their hash tags) against naive tags.
* **throughput** — for 1 node (1 and 16 partitions) and the cluster (16 partitions):
  `submit_many`, 32 concurrent `submit`s, and drain by 2 worker processes (`bench.noop`);
  Redis CPU seconds per master in each phase and each master's share; connections per node
  (`CLIENT LIST`) and per process (from /proc: a worker process, the service with its hub).
* **chaos** — the cluster with `wait_replicas = 1`, a service and 2 worker processes; HTTP
  submitters (paced), SSE watchers on every 10th job and readers; one master SIGKILLed after a
  third of the jobs. Lost (accepted with 201, not succeeded), duplicated (the body ran more than
  once: counted in a ledger server outside the cluster), unexpected (ran but never accepted, or
  not exactly one terminal event), HTTP answers, and the failover window seen by submitters.
* **durability** — jobs submitted while one master's replica is cut off (`cut_replication`:
  the link is down, the replica stays the failover candidate), then that master SIGKILLed:
  accepted jobs lost with `wait_replicas` 0, 1, and 1 with `min-replicas-to-write 1` on the
  masters.

Prints a table per section, then one JSON line with every figure. No assertion anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from bench.cluster_tasks import RUNS
from bench.common import ROOT, Proc, children_of, env_for, free_port, lat_stats, table
from service.core import config as config_mod
from service.core.embedded import ServerProcess
from service.core.errors import NotFound
from service.core.keys import Keys
from service.core.retry import retrying
from service.producer import Producer
from tests.load import Load
from tests.topology import (
    Cluster,
    call,
    cut_replication,
    info,
    server_binaries,
)
from workers.registry import load_modules

PARTITIONS = 16
RESULTS: dict[str, Any] = {}


def out(text: str = "") -> None:
    print(text, flush=True)


# -- servers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_node(binary: str) -> Iterator[ServerProcess]:
    """One server, AOF everysec like the cluster's nodes."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-node-") as tmp:
        server = ServerProcess(Path(tmp) / "redis", binary=binary, persistent=True)
        server.start()
        try:
            yield server
        finally:
            server.kill()


@contextlib.contextmanager
def cluster(binary: str) -> Iterator[Cluster]:
    with Cluster(binary) as c:
        yield c


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def cpu(port: int) -> float:
    i = info(port, "cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])


def clients(port: int) -> int:
    """Normal client connections on a node (CLIENT LIST), not counting the one asking."""
    text: str = call(port, "CLIENT", "LIST", "TYPE", "normal")
    return max(0, len(text.splitlines()) - 1)


def tcp_peers(pid: int, ports: set[int]) -> Counter[int]:
    """Established TCP connections of process `pid` to each of `ports` (from /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    out: Counter[int] = Counter()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as f:
            next(f)
            for line in f:
                parts = line.split()
                remote, state, inode = parts[2], parts[3], parts[9]
                port = int(remote.rsplit(":", 1)[1], 16)
                if state == "01" and inode in inodes and port in ports:
                    out[port] += 1
    return out


def conns_of(pid: int, ports: set[int]) -> int:
    return sum(tcp_peers(pid, ports).values())


# -- a deployment under test ------------------------------------------------------------------


class Target:
    """One Redis setup to bench: URL, Tidings settings, master ports."""

    def __init__(
        self,
        name: str,
        url: str,
        masters: list[int],
        env: dict[str, str],
        replicas: list[int] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.masters = masters
        self.replicas = replicas or []
        self.env = env_for(url, **env)
        self.cfg = config_mod.load(os.devnull, environ=self.env)

    def producer(self) -> Producer:
        return Producer.from_url(
            self.url, config=self.cfg, registry=load_modules(self.cfg.workers.tasks)
        )

    def cpu(self) -> dict[int, float]:
        return {p: cpu(p) for p in self.masters}


def cpu_rows(before: dict[int, float], after: dict[int, float]) -> tuple[str, dict[str, Any]]:
    used = {p: after[p] - before[p] for p in before}
    total = sum(used.values()) or 1e-9
    shares = {p: used[p] / total for p in used}
    text = " / ".join(f"{used[p]:.2f}s ({shares[p]:.0%})" for p in sorted(used))
    return text, {
        "per_master_s": [round(used[p], 3) for p in sorted(used)],
        "share": [round(shares[p], 3) for p in sorted(used)],
        "total_s": round(total, 3),
    }


async def drained(p: Producer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            q = (await p.queues()).get("default")
            if q is not None and q.queued + q.running + q.scheduled == 0:
                return True
        await asyncio.sleep(0.05)
    return False


async def bench_target(t: Target, n: int, logdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    rows: list[tuple[str, str]] = []
    async with t.producer() as p:
        await p.submit("bench.noop", {})  # registers the queue; loads the scripts
        # submit_many
        c0, t0 = t.cpu(), time.perf_counter()
        await p.submit_many([("bench.noop", {}) for _ in range(n)])
        dt = time.perf_counter() - t0
        text, res["submit_many_cpu"] = cpu_rows(c0, t.cpu())
        res["submit_many_per_s"] = round(n / dt)
        rows.append(("submit_many jobs/s", f"{n / dt:,.0f}"))
        rows.append(("  Redis CPU per master", text))
        # concurrent single submits
        m = max(320, n // 4)
        lat: list[float] = []

        async def one(k: int) -> None:
            for _ in range(k):
                s = time.perf_counter()
                await p.submit("bench.noop", {})
                lat.append((time.perf_counter() - s) * 1000)

        c0, t0 = t.cpu(), time.perf_counter()
        await asyncio.gather(*(one(m // 32) for _ in range(32)))
        dt = time.perf_counter() - t0
        text, res["submit_cpu"] = cpu_rows(c0, t.cpu())
        res["submit_per_s"] = round(len(lat) / dt)
        res["submit_latency"] = lat_stats(lat)
        rows.append(("32 concurrent submit jobs/s", f"{len(lat) / dt:,.0f}"))
        rows.append(("  latency p50 / p99 ms", f"{pct_text(res['submit_latency'])}"))
        rows.append(("  Redis CPU per master", text))
        total = n + len(lat) + 1
        # drain with 2 worker processes, a service with its hub running beside them
        port = free_port()
        service = Proc(
            [sys.executable, "-m", "service"],
            {**t.env, "TIDINGS_HTTP_PORT": str(port), "TIDINGS_WORKERS_TASKS": "bench.tasks"},
            logdir / f"service-{t.name}.log",
            cwd=ROOT,
        )
        argv = [sys.executable, "-m", "workers", "--tasks", "bench.tasks", "--processes", "2"]
        workers = None
        try:
            await wait_http(port, service)
            # the hub starts on first use: one job followed through the service's SSE
            await follow_one_over_http(port)
            c0, t0 = t.cpu(), time.perf_counter()
            workers = Proc(argv, t.env, logdir / f"workers-{t.name}.log", cwd=ROOT)
            mid: dict[str, Any] = {}

            async def sample_connections() -> None:
                # the most seen while draining: per node (CLIENT LIST), per process (/proc)
                assert workers is not None
                mid.update(per_node={}, worker=[0, 0], service=0)
                ports = set(t.masters) | set(t.replicas)
                while True:
                    await asyncio.sleep(0.25)
                    kids = children_of(workers.pid)
                    for p_ in sorted(ports):
                        mid["per_node"][p_] = max(mid["per_node"].get(p_, 0), clients(p_))
                    for i, k in enumerate(kids[:2]):
                        mid["worker"][i] = max(mid["worker"][i], conns_of(k, ports))
                    mid["service"] = max(mid["service"], conns_of(service.pid, ports))

            sampler = asyncio.create_task(sample_connections())
            ok = await drained(p, timeout=300)
            dt = time.perf_counter() - t0
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            text, res["drain_cpu"] = cpu_rows(c0, t.cpu())
            res["drain_per_s"] = round(total / dt) if ok else None
            res["connections"] = mid
            rows.append(("drain jobs/s (2 workers, incl. start-up)", f"{total / dt:,.0f}"))
            rows.append(("  Redis CPU per master", text))
            rows.append(("  client connections per node", str(list(mid["per_node"].values()))))
            rows.append(("  connections of each worker process", str(mid["worker"])))
            rows.append(("  connections of the service process", str(mid["service"])))
        finally:
            if workers is not None:
                workers.stop()
            service.stop()
    out(table(rows, f"{t.name}, N = {n:,}"))
    out()
    return res


def pct_text(s: dict[str, float]) -> str:
    return f"{s['p50_ms']} / {s['p99_ms']}"


async def wait_http(port: int, proc: Proc, timeout: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"service exited; see {proc.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("service not ready")


async def follow_one_over_http(port: int) -> None:
    """Open the firehose once so the service's hub starts its per-partition reads."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/api/events", timeout=aiohttp.ClientTimeout(total=2)) as r,
    ):
        with contextlib.suppress(TimeoutError):
            await r.content.readline()


async def section_throughput(binary: str, n: int, tmp: Path) -> None:
    out("== throughput: 1 node against a 3-master cluster ==")
    res: dict[str, Any] = {}
    with single_node(binary) as server:
        for parts in (1, PARTITIONS):
            t = Target(
                f"1 node, {parts} partition{'s' * (parts > 1)}",
                server.url,
                [port_of(server.url)],
                {
                    "TIDINGS_REDIS_PARTITIONS": str(parts),
                    "TIDINGS_REDIS_PREFIX": f"b{parts}",
                    "TIDINGS_WORKERS_TASKS": "bench.tasks",
                },
            )
            res[f"single_{parts}"] = await bench_target(t, n, tmp)
    with cluster(binary) as c:
        t = Target(
            "3-master cluster, 16 partitions",
            c.url,
            sorted(m.port for m in c.masters()),
            {
                "TIDINGS_REDIS_CLUSTER": "true",
                "TIDINGS_REDIS_PARTITIONS": str(PARTITIONS),
                "TIDINGS_WORKERS_TASKS": "bench.tasks",
            },
            replicas=sorted(r.port for r in c.replicas()),
        )
        res["cluster_16"] = await bench_target(t, n, tmp)
    RESULTS["throughput"] = res


# -- spread ------------------------------------------------------------------------------------


def section_spread(binary: str) -> None:
    out("== spread: 16 partitions over 3 masters ==")
    with cluster(binary) as c:
        keys = Keys("tidings", PARTITIONS)
        spread = Counter(c.master_for_slot(keys.slot(k)).port for k in range(PARTITIONS))
        naive = Counter(c.master_for_key(f"{{tidings:{k}}}").port for k in range(PARTITIONS))
        ports = sorted(m.port for m in c.masters())
        rows = [
            ("spread tags (Keys)", str([spread[p] for p in ports])),
            ("naive {tidings:k}", str([naive[p] for p in ports])),
            ("slots of partitions", str([keys.slot(k) for k in range(PARTITIONS)])),
        ]
        out(table(rows, "partitions per master"))
        out()
        RESULTS["spread"] = {
            "spread": [spread[p] for p in ports],
            "naive": [naive[p] for p in ports],
        }


# -- chaos: a master SIGKILL under load --------------------------------------------------------


async def section_chaos(binary: str, jobs: int, rate: float, tmp: Path) -> None:
    out("== chaos: a master SIGKILLed under load (cluster, 16 partitions, wait_replicas = 1) ==")
    with single_node(binary) as ledger, cluster(binary) as c:
        env = {
            "TIDINGS_REDIS_CLUSTER": "true",
            "TIDINGS_REDIS_PARTITIONS": str(PARTITIONS),
            "TIDINGS_REDIS_WAIT_REPLICAS": "1",
            "TIDINGS_JOBS_LEASE_S": "5",
            "TIDINGS_WORKERS_TASKS": "bench.cluster_tasks",
            "BENCH_LEDGER_URL": ledger.url,
        }
        t = Target("cluster", c.url, sorted(m.port for m in c.masters()), env)
        port = free_port()
        service = Proc(
            [sys.executable, "-m", "service"],
            {**t.env, "TIDINGS_HTTP_PORT": str(port)},
            tmp / "chaos-service.log",
            cwd=ROOT,
        )
        argv = [sys.executable, "-m", "workers", "--processes", "2"]
        workers = Proc(argv, t.env, tmp / "chaos-workers.log", cwd=ROOT)
        load = Load(
            f"http://127.0.0.1:{port}",
            jobs=jobs,
            rate=rate,
            task="cluster.work",
            payload={"ms": 200, "steps": 4},
            submitters=32,
            watch_every=10,
        )
        try:
            await wait_http(port, service)
            kids = workers.children(want=2)
            await load.start()
            await load.wait_accepted(jobs // 3, timeout=120)
            # not the node redis.url names: a client made after the kill bootstraps from it
            victim = next(m for m in c.masters() if m.port != port_of(t.url))
            t_kill = time.monotonic()
            c.kill(victim)
            new = await asyncio.to_thread(c.wait_failover, victim, 30)
            promoted_after = time.monotonic() - t_kill
            await load.finished(timeout=300)
            async with t.producer() as p:
                rep = await load.check(p, timeout=180)
                accepted = set(rep.accepted)
                lost = list(rep.lost)
                for jid in accepted - set(rep.lost):
                    job = await retrying(lambda j=jid: p.get(j), what="get", deadline_s=30)
                    if job.state != "succeeded":
                        lost.append(jid)
            ledger_r = redis.Redis.from_url(ledger.url)
            runs = {k.decode(): int(v) for k, v in ledger_r.hgetall(RUNS).items()}
            ledger_r.close()
            duplicated = [j for j in accepted if runs.get(j, 0) > 1]
            unexpected = [j for j in runs if j not in accepted] + rep.bad_terminal
            first_503, back = rep.window(t_kill)
            stall = longest_stall(rep, t_kill)
            # the killed master restarted: it rejoins as a replica of its successor
            t_restart = time.monotonic()
            c.restart(victim)
            await asyncio.to_thread(c.wait_healthy, 60)
            rejoined = time.monotonic() - t_restart
            restarted = [k for k in workers.children() if k not in kids]
            problems = rep.problems()
            result = {
                "jobs": len(accepted),
                "lost": len(lost),
                "duplicated": len(duplicated),
                "unexpected": len(unexpected),
                "retried": rep.retried,
                "states": dict(rep.states),
                "watchers": len(rep.watched),
                "watchers_mismatched": len(rep.watch_mismatch),
                "submit_answers": dict(rep.statuses("submit")),
                "read_answers": dict(
                    rep.statuses("queues") + rep.statuses("list") + rep.statuses("get")
                ),
                "http_500": sum(1 for a in rep.answers if a.status == 500),
                "promoted_after_s": round(promoted_after, 2),
                "first_503_s": None if first_503 is None else round(first_503, 2),
                "first_201_after_s": None if back is None else round(back, 2),
                "longest_stall_without_201_s": round(stall, 2),
                "old_master_rejoined_s": round(rejoined, 2),
                "worker_processes_restarted": len(restarted),
                "service_restarted": not service.alive(),
                "problems": problems[:5],
            }
            rows = [
                ("jobs accepted (201)", str(len(accepted))),
                ("lost", str(len(lost))),
                ("duplicated (body ran twice)", str(len(duplicated))),
                ("unexpected", str(len(unexpected))),
                ("retried (attempt > 1)", str(rep.retried)),
                ("watchers / mismatched", f"{len(rep.watched)} / {len(rep.watch_mismatch)}"),
                ("submit answers", str(dict(rep.statuses("submit")))),
                ("read answers", str(result["read_answers"])),
                ("replica promoted after", f"{promoted_after:.2f} s (port {new.port})"),
                (
                    "submitters: first 503 / first 201 after",
                    f"+{fmt(first_503)} s / +{fmt(back)} s after the kill",
                ),
                ("longest stretch without a 201", f"{stall:.2f} s"),
                ("old master rejoined (synced) after", f"{rejoined:.2f} s"),
                ("processes restarted", str(len(restarted) + (not service.alive()))),
            ]
            out(table(rows, f"master SIGKILL with {jobs} jobs at {rate:.0f}/s"))
            for line in problems[:5]:
                out(f"  problem: {line}")
            out()
            RESULTS["chaos"] = result
        finally:
            await load.close()
            workers.stop()
            service.stop()


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def longest_stall(rep: Any, after: float) -> float:
    """Longest stretch between two 201 answers to submits, from 1 s before `after` on."""
    ok = sorted(a.t for a in rep.answers if a.what == "submit" and a.status == 201)
    ok = [x for x in ok if x >= after - 1.0]
    return max((b - a for a, b in itertools.pairwise(ok)), default=0.0)


# -- durability: wait_replicas under a lagging replica -----------------------------------------


async def durability_case(
    binary: str, wait: int, min_replicas: bool, before: int, lag_s: float
) -> dict[str, Any]:
    with cluster(binary) as c:
        env = {
            "TIDINGS_REDIS_CLUSTER": "true",
            "TIDINGS_REDIS_PARTITIONS": str(PARTITIONS),
            "TIDINGS_REDIS_WAIT_REPLICAS": str(wait),
            "TIDINGS_WORKERS_TASKS": "bench.tasks",
        }
        t = Target("cluster", c.url, sorted(m.port for m in c.masters()), env)
        if min_replicas:
            for m in c.masters():
                call(m.port, "CONFIG", "SET", "min-replicas-to-write", "1")
                call(m.port, "CONFIG", "SET", "min-replicas-max-lag", "2")
        victim = next(m for m in c.masters() if m.port != port_of(t.url))
        (replica,) = c.replicas_of(victim)
        keys = Keys(t.cfg.redis.prefix, PARTITIONS)
        on_victim = {k for k in range(PARTITIONS) if c.master_for_slot(keys.slot(k)) is victim}
        accepted: list[str] = []
        refused = 0
        lat: list[float] = []
        async with t.producer() as p:
            for _ in range(before):
                accepted.append((await p.submit("bench.noop", {})).id)
            n_before = len(accepted)
            cut_replication(replica)
            deadline = time.monotonic() + lag_s

            async def submitter() -> None:
                nonlocal refused
                while time.monotonic() < deadline:
                    s = time.perf_counter()
                    try:
                        job = await p.submit("bench.noop", {})
                    except Exception:
                        refused += 1
                        await asyncio.sleep(0.05)
                        continue
                    lat.append((time.perf_counter() - s) * 1000)
                    accepted.append(job.id)

            await asyncio.gather(*(submitter() for _ in range(8)))
            unreplicated = p.durability.unreplicated
            c.kill(victim)
            await asyncio.to_thread(c.wait_failover, victim, 30)
            # let the old master rejoin later: the promoted replica keeps the bogus master auth
            call(replica.port, "CONFIG", "SET", "masteruser", "")
            call(replica.port, "CONFIG", "SET", "masterauth", "")
            await asyncio.to_thread(c.wait_healthy, 30, replicas=False)
            lost_before = lost_after = lost_on_victim = 0
            for i, jid in enumerate(accepted):
                try:
                    await retrying(lambda j=jid: p.get(j), what="get", deadline_s=30)
                except NotFound:
                    if i < n_before:
                        lost_before += 1
                    else:
                        lost_after += 1
                    if keys.partition(jid) in on_victim:
                        lost_on_victim += 1
        during = len(accepted) - n_before
        to_victim = sum(1 for j in accepted[n_before:] if keys.partition(j) in on_victim)
        return {
            "accepted_before_cut": n_before,
            "accepted_during_lag": during,
            "accepted_during_lag_on_killed_master": to_victim,
            "refused_during_lag": refused,
            "unreplicated_acks": unreplicated,
            "lost": lost_before + lost_after,
            "lost_on_killed_master": lost_on_victim,
            "submit_latency_during_lag": lat_stats(lat) if lat else None,
        }


async def section_durability(binary: str, before: int, lag_s: float) -> None:
    out(f"== durability: a master killed after {lag_s:.0f} s with its replica cut off ==")
    cases = [
        ("wait_replicas = 0", 0, False),
        ("wait_replicas = 1", 1, False),
        ("wait_replicas = 1, min-replicas-to-write 1", 1, True),
    ]
    res = {}
    rows = []
    for name, wait, mr in cases:
        r = await durability_case(binary, wait, mr, before, lag_s)
        res[name] = r
        lat = r["submit_latency_during_lag"]
        rows.append(
            (
                name,
                f"accepted during the lag {r['accepted_during_lag']} "
                f"({r['accepted_during_lag_on_killed_master']} on the killed master), "
                f"refused {r['refused_during_lag']}, acked by fewer replicas than asked "
                f"{r['unreplicated_acks']}, LOST {r['lost']}; submit p50/p99 "
                + (pct_text(lat) if lat else "-")
                + " ms",
            )
        )
    out(table(rows, "accepted jobs lost to a master kill under a lagging replica"))
    out()
    RESULTS["durability"] = res


# -- main --------------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="spread,throughput,chaos,durability")
    ap.add_argument("--server", default="redis", choices=["redis", "valkey"])
    ap.add_argument("--n", type=int, default=0, help="jobs per throughput phase")
    ap.add_argument("--chaos-jobs", type=int, default=0)
    args = ap.parse_args()
    binaries = server_binaries()
    if args.server not in binaries:
        raise SystemExit(f"no {args.server} server binary here")
    binary = binaries[args.server]
    only = set(args.only.split(","))
    n = args.n or (2000 if args.quick else 10000)
    chaos_jobs = args.chaos_jobs or (300 if args.quick else 600)
    tmp = Path(tempfile.mkdtemp(prefix="tidings-bench-cluster-"))
    out(f"server: {args.server} ({binary}); logs in {tmp}")
    out()
    try:
        if "spread" in only:
            section_spread(binary)
        if "throughput" in only:
            await section_throughput(binary, n, tmp)
        if "chaos" in only:
            await section_chaos(binary, chaos_jobs, 60.0 if args.quick else 80.0, tmp)
        if "durability" in only:
            await section_durability(binary, 100 if args.quick else 200, 1.0 if args.quick else 2.0)
    finally:
        print(json.dumps(RESULTS, default=str))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
