"""What the metric counters cost Redis per job: the scripts as they are, against a scratch copy of
the code whose scripts have every `count(...)`, `observe(...)` and `outcome(...)` call removed.

    .venv/bin/python bench/metrics_cost.py                 # 20,000 no-op jobs, 5 interleaved reps
    .venv/bin/python bench/metrics_cost.py -n 5000 --reps 2
    .venv/bin/python bench/metrics_cost.py --rev 5e48659   # also the scripts of a git revision

Each rep and variant, on one private redis-server (no persistence, never the Redis on 6379):
FLUSHALL; submit N `bench.noop` jobs with `submit_many` from a subprocess running that variant's
code; then `python -m workers --processes 2` of that variant drains them. With `--rev REV`, a
third variant runs the code of that git revision (exported with `git archive`), to compare a
change to the counting against the same baseline in the same session. INFO before and after
each phase gives Redis CPU (used_cpu_user + used_cpu_sys) and commands per job; commandstats give
the HINCRBY / PEXPIRE calls made inside the scripts. Variants alternate (A B B A A B ...), so a
slow spell of the shared machine hits both. The stripped copy lives in a temporary directory and
is deleted at the end. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.core.embedded import ServerProcess  # noqa: E402

PREFIX = "mcost"
QUEUE_KEY = "{" + PREFIX + ":0}:q:default"
# a whole statement calling one of the counting helpers (they are always one line)
COUNTING_CALL = re.compile(r"^\s*(count|observe|outcome)\(.*\)\s*$")
FILL = """
import asyncio, sys
import bench.tasks  # noqa: F401
from service.producer import Producer
from workers.registry import REGISTRY

async def main(url, n):
    async with Producer.from_url(url, prefix="{prefix}", registry=dict(REGISTRY)) as p:
        done = 0
        while done < n:
            k = min(1000, n - done)
            await p.submit_many([("bench.noop", {})] * k)
            done += k

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""".replace("{prefix}", PREFIX)


# The same work with no worker processes: submit, start and finish through the script ops in fixed
# batches, so every variant runs exactly the same sequence of script calls (a drain's batch sizes
# depend on how fast the workers happen to be on a busy machine; here they do not).
DRIVER = """
import json, subprocess, sys, time
import redis
from service.core.keys import Keys
from service.core.scripts import GROUP, Entry, Limits, NewJob, Ops, Write
from service.core.wire import new_job_id

url, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
callgrind = sys.argv[4] if len(sys.argv) > 4 else None  # the server runs under callgrind
r = redis.Redis.from_url(url)
keys, ops = Keys("{prefix}", 1), Ops(Keys("{prefix}", 1), Limits())
qkey = keys.queue(0, "default")

def stamp():
    if callgrind:  # the server's instruction counts up to here, in a file of their own
        subprocess.run(["callgrind_control", "-d", callgrind], check=True, capture_output=True)
    i = r.info("all")
    calls = {k[8:]: v["calls"] for k, v in i.items() if k.startswith("cmdstat_")}
    cpu = float(i["used_cpu_user"]) + float(i["used_cpu_sys"])
    return [cpu, i["total_commands_processed"], calls]

jobs = [NewJob(id=new_job_id(), task="bench.noop", queue="default", payload=b"{}",
               max_attempts=3, timeout_s=None, delay_ms=0, idempotency_key=None, call_id="")
        for _ in range(n)]
r.xgroup_create(qkey, GROUP, id="0", mkstream=True)
stamps = [stamp()]
for i in range(0, n, batch):
    ops.submit(0, jobs[i:i + batch]).run_sync(r)
stamps.append(stamp())
running = []
minute = int(time.time() // 60)
while True:
    resp = r.xreadgroup(GROUP, "bench", {qkey: ">"}, count=batch)
    if not resp:
        break
    entries = [Entry(f[b"j"].decode(), "default", eid.decode()) for eid, f in resp[0][1]]
    running += [(row.id, row.run) for row in ops.start(0, "bench", entries, minute).run_sync(r)]
stamps.append(stamp())
for i in range(0, len(running), batch):
    writes = [Write("f", jid, "default", run, 1, b"null", "succeeded", 0)
              for jid, run in running[i:i + batch]]
    ops.apply(0, writes, minute).run_sync(r)
stamps.append(stamp())
assert len(running) == n and r.xlen(qkey) == 0
print(json.dumps(stamps))
""".replace("{prefix}", PREFIX)


def revision_copy(rev: str, dest: Path) -> None:
    """The code of git revision `rev`, exported to `dest`."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "service", "workers", "bench"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def stripped_copy(dest: Path) -> int:
    """Copy the code to `dest` with the counting calls removed from every script; returns how
    many calls were removed."""
    for name in ("service", "workers", "bench"):
        shutil.copytree(
            ROOT / name,
            dest / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.png", "static"),
        )
    removed = 0
    for lua in (dest / "service" / "core" / "lua").glob("*.lua"):
        if lua.name == "common.lua" or lua.name == "events.lua":
            continue  # the helpers' definitions stay; only their calls go
        kept = []
        for line in lua.read_text().splitlines(keepends=True):
            if COUNTING_CALL.match(line):
                removed += 1
                continue
            kept.append(line)
        lua.write_text("".join(kept))
    return removed


def env_for(url: str, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TIDINGS_REDIS_URL=url,
        TIDINGS_REDIS_PREFIX=PREFIX,
        TIDINGS_CONFIG=os.devnull,
        TIDINGS_LOG_LEVEL="warning",
        PYTHONPATH=str(root),
    )
    return env


def driver_run(
    r: redis.Redis, url: str, root: Path, n: int, batch: int, callgrind: int | None = None
) -> dict[str, Any]:
    r.flushall()
    extra = [str(callgrind)] if callgrind else []
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, url, str(n), str(batch), *extra],
        env=env_for(url, root),
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    s = [{"cpu": cpu, "cmds": cmds, "calls": calls} for cpu, cmds, calls in json.loads(out)]
    return {
        "submit": per_job(s[0], s[1], n),
        "start": per_job(s[1], s[2], n),
        "finish": per_job(s[2], s[3], n),
        "total": per_job(s[0], s[3], n),
    }


def instructions_run(binary: str, root: Path, n: int, batch: int, tmp: Path) -> dict[str, float]:
    """Redis's own instructions per job (callgrind's Ir, user space), per phase: a count that
    other load on the machine does not change. A fresh server under callgrind per run."""
    out = tmp / "cg"
    for old in tmp.glob("cg*"):
        old.unlink()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            binary,
            # the server's timer (expiry, stats) 1/s, not 10/s: under valgrind a run takes long,
            # and timer work would count as the jobs'
            "--hz",
            "1",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        r = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        driver_run(r, f"redis://127.0.0.1:{port}/0", root, n, batch, callgrind=server.pid)
        r.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the shutdown closes our connection
    finally:
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    def total(path: Path) -> float:
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                return float(line.split()[1])
        raise ValueError(f"no totals in {path}")

    # dumps: .1 start-up, .2 submit, .3 start, .4 finish
    submit, start, finish = (total(Path(f"{out}.{i}")) / n for i in (2, 3, 4))
    return {"submit": submit, "start": start, "finish": finish, "total": submit + start + finish}


def snapshot(r: redis.Redis) -> dict[str, Any]:
    info = r.info("all")
    return {
        "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "cmds": int(info["total_commands_processed"]),
        "calls": {
            k[len("cmdstat_") :]: int(v["calls"])
            for k, v in info.items()
            if k.startswith("cmdstat_")
        },
    }


def per_job(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, float]:
    def calls(name: str) -> int:
        return int(b["calls"].get(name, 0)) - int(a["calls"].get(name, 0))

    return {
        "cpu_us": (b["cpu"] - a["cpu"]) * 1e6 / n,
        "cmds": (b["cmds"] - a["cmds"] - 1) / n,  # the INFO itself is not a job's
        "scripts": calls("evalsha") / n,
        "hincrby": calls("hincrby") / n,
        "pexpire": calls("pexpire") / n,
    }


def one_run(r: redis.Redis, url: str, root: Path, n: int, logdir: Path) -> dict[str, Any]:
    r.flushall()
    env = env_for(url, root)
    s0 = snapshot(r)
    subprocess.run([sys.executable, "-c", FILL, url, str(n)], env=env, cwd=root, check=True)
    s1 = snapshot(r)
    assert r.xlen(QUEUE_KEY) == n, r.xlen(QUEUE_KEY)
    with open(logdir / f"workers-{root.name}.log", "ab") as log:
        w = subprocess.Popen(
            [sys.executable, "-m", "workers", "--tasks", "bench.tasks", "--processes", "2"],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    t0 = time.perf_counter()
    try:
        while r.xlen(QUEUE_KEY) > 0:
            if w.poll() is not None:
                raise RuntimeError(f"workers exited; see {logdir}")
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("drain took over 300 s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        s2 = snapshot(r)
    finally:
        os.killpg(w.pid, signal.SIGTERM)  # our own supervisor and its children, by their group
        w.wait(60)
    return {
        "submit": per_job(s0, s1, n),
        "drain": per_job(s1, s2, n),
        "total": per_job(s0, s2, n),
        "drain_s": elapsed,
    }


def median(rows: list[dict[str, Any]], phase: str, key: str) -> float:
    return statistics.median(row[phase][key] for row in rows)


def report(title: str, results: dict[str, list[dict[str, Any]]], phases: tuple[str, ...]) -> None:
    others = [name for name in results if name != "stripped"]
    print(f"\n{title}")
    head = f"{'':30}" + "".join(f"{name:>12}" for name in others) + f"{'stripped':>12}"
    print(head + "".join(f"{'cost ' + name:>16}" for name in others))
    for phase in phases:
        for key, label in (
            ("cpu_us", "Redis CPU µs/job"),
            ("cmds", "commands/job"),
            ("hincrby", "  of which HINCRBY"),
            ("pexpire", "  of which PEXPIRE"),
        ):
            base = median(results["stripped"], phase, key)
            vals = [median(results[name], phase, key) for name in others]
            line = f"{phase + ' ' + label:30}" + "".join(f"{v:12.2f}" for v in vals)
            line += f"{base:12.2f}"
            for v in vals:
                line += f"{(v - base) / base * 100:+15.1f}%" if base > 0 else f"{'':16}"
            print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="jobs per run")
    ap.add_argument("--reps", type=int, default=5, help="runs per variant (interleaved)")
    ap.add_argument("--rev", help="also run the code of this git revision")
    ap.add_argument(
        "--only",
        default="valgrind,driver,drain",
        help="valgrind (Redis instructions per job, fixed batches; needs valgrind), driver (Redis "
        "CPU, fixed batches), drain (Redis CPU, worker processes); comma-separated",
    )
    ap.add_argument("--valgrind-n", type=int, default=2000, help="jobs per run under callgrind")
    ap.add_argument("--valgrind-batches", default="1,50", help="batch sizes of the callgrind runs")
    args = ap.parse_args()
    modes = args.only.split(",")
    # SIGTERM unwinds like Ctrl-C: the server, the workers and the scratch copy go with us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server on PATH")
    with tempfile.TemporaryDirectory(prefix="tidings-mcost-") as tmp:
        scratch = Path(tmp) / "stripped"
        removed = stripped_copy(scratch)
        roots = {"counters": ROOT, "stripped": scratch}
        if args.rev:
            roots[args.rev] = Path(tmp) / "rev"
            revision_copy(args.rev, roots[args.rev])
        server = ServerProcess(Path(tmp) / "redis", binary=binary, persistent=False)
        server.start()
        r = redis.Redis.from_url(server.url, decode_responses=True)
        version = r.info("server")["redis_version"]
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        instr: dict[int, dict[str, dict[str, float]]] = {}
        try:
            if "valgrind" in modes and shutil.which("valgrind"):
                for name in roots:
                    for batch in map(int, args.valgrind_batches.split(",")):
                        n = args.valgrind_n // 2 if batch == 1 else args.valgrind_n
                        # the same run with n/10 jobs, subtracted: what stays is the marginal
                        # cost of a job, without start-up, INFO snapshots or script compilation
                        few = max(batch, n // 10 // batch * batch)
                        a = instructions_run(binary, roots[name], few, batch, Path(tmp))
                        b = instructions_run(binary, roots[name], n, batch, Path(tmp))
                        row = {k: (b[k] * n - a[k] * few) / (n - few) for k in b}
                        instr.setdefault(batch, {})[name] = row
                        print(
                            f"{name:>9} under callgrind, batches of {batch:2}: "
                            f"{row['total']:,.0f} Redis instructions per job",
                            flush=True,
                        )
            for rep in range(args.reps):
                order = list(roots) if rep % 2 == 0 else list(reversed(roots))
                for name in order:
                    if "driver" in modes:
                        for batch, n in ((1, max(1, args.n // 4)), (50, args.n)):
                            row = driver_run(r, server.url, roots[name], n, batch)
                            runs.setdefault(f"driver, batches of {batch}", {}).setdefault(
                                name, []
                            ).append(row)
                            print(
                                f"rep {rep + 1} {name:>9} driver batch {batch:3}: "
                                f"{row['total']['cpu_us']:6.2f} µs/job, "
                                f"{row['total']['cmds']:5.2f} cmds/job",
                                flush=True,
                            )
                    if "drain" in modes:
                        row = one_run(r, server.url, roots[name], args.n, Path(tmp))
                        runs.setdefault("drain by 2 worker processes", {}).setdefault(
                            name, []
                        ).append(row)
                        print(
                            f"rep {rep + 1} {name:>9} drain: "
                            f"{row['total']['cpu_us']:6.2f} µs/job "
                            f"(submit {row['submit']['cpu_us']:5.2f}, drain "
                            f"{row['drain']['cpu_us']:6.2f}), {row['total']['cmds']:5.2f} cmds/job,"
                            f" drain {row['drain_s']:.2f} s",
                            flush=True,
                        )
        finally:
            r.close()
            server.kill()
    print(
        f"\nRedis {version}, bench.noop jobs ({args.n:,} per run; batches of 1: "
        f"{max(1, args.n // 4):,}), {args.reps} reps per variant interleaved, medians; "
        f"{removed} counting calls removed in the stripped copy"
    )
    others = [name for name in roots if name != "stripped"]
    for batch, rows in instr.items():
        print(
            f"\nRedis instructions per job (callgrind Ir, user space; load-independent), "
            f"batches of {batch}"
        )
        print(
            f"{'':30}"
            + "".join(f"{name:>12}" for name in others)
            + f"{'stripped':>12}"
            + "".join(f"{'cost ' + name:>16}" for name in others)
        )
        for phase in ("submit", "start", "finish", "total"):
            base = rows["stripped"][phase]
            line = f"{phase:30}" + "".join(f"{rows[name][phase]:12,.0f}" for name in others)
            line += f"{base:12,.0f}"
            line += "".join(f"{(rows[name][phase] - base) / base * 100:+15.1f}%" for name in others)
            print(line)
    for title, results in runs.items():
        phases = (
            ("submit", "drain", "total")
            if title.startswith("drain")
            else ("submit", "start", "finish", "total")
        )
        report(title, results, phases)


if __name__ == "__main__":
    main()
