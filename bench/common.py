"""Shared pieces of the benchmarks: a private redis-server, worker/service processes started and
stopped by their own pids, INFO snapshots, percentiles and table printing.

Everything runs on 127.0.0.1 against a server started here (never the Redis on 6379), and every
process started here is stopped here, by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.core.embedded import ServerProcess  # noqa: E402
from service.core.procs import die_with_parent  # noqa: E402

PREFIX = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the private server ------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis(binary: str | None = None) -> Iterator[ServerProcess]:
    """A throw-away redis-server (no persistence) on a free loopback port."""
    binary = binary or shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server on PATH")
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "redis", binary=binary, persistent=False)
        server.start()
        try:
            yield server
        finally:
            server.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_for(url: str, **extra: str) -> dict[str, str]:
    """Environment of the worker / service processes: defaults (no config file), our server."""
    env = dict(os.environ)
    env.update(
        TIDINGS_REDIS_URL=url,
        TIDINGS_REDIS_PREFIX=PREFIX,
        TIDINGS_CONFIG="/dev/null",
        TIDINGS_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# -- processes we start and stop by pid ------------------------------------------------------


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class Proc:
    """A process tree started by us (`python -m workers` or `python -m service`)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM when the benchmark dies, even by SIGKILL: no orphaned workers or service
            preexec_fn=die_with_parent,
        )
        self.pid = self.proc.pid
        self.known_children: set[int] = set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self, want: int = 0, timeout: float = 10.0) -> list[int]:
        """Pids of the direct children (waits until `want` of them exist)."""
        deadline = time.monotonic() + timeout
        while True:
            kids = children_of(self.pid)
            self.known_children.update(kids)
            if len(kids) >= want or time.monotonic() > deadline or not self.alive():
                return kids
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to our process (the supervisor forwards it), then SIGKILL what is left."""
        self.known_children.update(children_of(self.pid))
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.known_children:
            # our own children, by pid, if one outlived its supervisor (normally none does)
            if _is_ours(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def _is_ours(pid: int) -> bool:
    """Still a `python -m workers/service` process (guards against a recycled pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"-m" in argv and (b"workers" in argv or b"service" in argv)


def start_workers(
    url: str,
    processes: int,
    logdir: Path,
    *,
    concurrency: int | None = None,
    tasks: str = "bench.tasks",
) -> Proc:
    argv = [sys.executable, "-m", "workers", "--tasks", tasks, "--processes", str(processes)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return Proc(argv, env_for(url), logdir / "workers.log", cwd=logdir)


def start_service(url: str, port: int, logdir: Path) -> Proc:
    env = env_for(
        url,
        TIDINGS_HTTP_HOST="127.0.0.1",
        TIDINGS_HTTP_PORT=str(port),
        TIDINGS_WORKERS_TASKS="bench.tasks",
        TIDINGS_REDIS_EMBEDDED_DIR=str(logdir),
    )
    return Proc([sys.executable, "-m", "service"], env, logdir / "service.log", cwd=logdir)


async def worker_up(p: Any, w: Proc, timeout: float = 60.0) -> None:
    """Wait until the worker runs jobs: submit no-ops until one finishes (or give up)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await p.submit("bench.noop", {})
        try:
            await p.wait(job.id, timeout=15)
            return
        except TimeoutError:
            if time.monotonic() > deadline or not w.alive():
                raise RuntimeError(f"worker did not come up; see {w.log_path}") from None


# -- INFO --------------------------------------------------------------------------------------


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def snapshot(r: redis.Redis) -> dict[str, Any]:
    """One `INFO all` (counted once in total_commands_processed)."""
    info = r.info("all")
    return {
        "cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "cmds": int(info["total_commands_processed"]),
        "mem": int(info["used_memory"]),
        "commandstats": {
            k[len("cmdstat_") :]: {"calls": int(v["calls"]), "usec": int(v["usec"])}
            for k, v in info.items()
            if k.startswith("cmdstat_")
        },
    }


def diff(before: dict[str, Any], after: dict[str, Any], n: int, top: int = 8) -> dict[str, Any]:
    rows = []
    for name, a in after["commandstats"].items():
        b = before["commandstats"].get(name, {"calls": 0, "usec": 0})
        calls = a["calls"] - b["calls"]
        usec = a["usec"] - b["usec"]
        if calls > 0 and name != "info":
            rows.append((name, calls, usec))
    rows.sort(key=lambda x: -x[1])
    # time Redis spent running the scripts (Lua, and the commands they call), per job
    script_us = sum(us for name, _, us in rows if name in ("evalsha", "eval", "fcall"))
    return {
        "script_us_per_job": script_us / n,
        # the INFO snapshots themselves are not counted
        "cmds_per_job": (after["cmds"] - before["cmds"] - 1) / n,
        "redis_cpu_us_per_job": (after["cpu"] - before["cpu"]) * 1e6 / n,
        "top": [
            {"cmd": c, "per_job": round(calls / n, 3), "usec_per_call": round(us / calls, 2)}
            for c, calls, us in rows[:top]
        ],
    }


# -- numbers -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_stats(ms: list[float]) -> dict[str, float]:
    return {
        "samples": len(ms),
        "p50_ms": round(pct(ms, 0.5), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(a) for a, _ in rows)
    out = [title, "-" * len(title)]
    out += [f"{a.ljust(width)}  {b}" for a, b in rows]
    return "\n".join(out)


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"
