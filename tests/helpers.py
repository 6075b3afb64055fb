"""Helpers for tests: waiting on conditions, an SSE reader, and real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from service.core import config as config_mod
from service.core.embedded import free_port
from service.producer import Producer

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str


async def read_sse(
    resp: aiohttp.ClientResponse,
    *,
    until: Callable[[list[SseEvent]], bool] | None = None,
    timeout: float = 15.0,
) -> list[SseEvent]:
    """Read events until the stream ends or `until(events)` holds."""
    events: list[SseEvent] = []
    cur: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line == "":
                if "data" in cur or "event" in cur:
                    events.append(
                        SseEvent(cur.get("id"), cur.get("event", "message"), cur.get("data", ""))
                    )
                    if until is not None and until(events):
                        return events
                cur = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            cur[name] = value[1:] if value.startswith(" ") else value
    return events


def base_env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TIDINGS_CONFIG": os.devnull,
            "TIDINGS_REDIS_URL": url,
            "TIDINGS_REDIS_PREFIX": prefix,
            "TIDINGS_WORKERS_TASKS": "tests.tasks,workers.demo",
            "TIDINGS_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@dataclass
class Stack:
    """The service and worker supervisors as real processes."""

    url: str
    prefix: str
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    service: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _producer: Producer | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> config_mod.Config:
        return config_mod.load(os.devnull, environ=base_env(self.url, self.prefix, **self.env))

    async def producer(self) -> Producer:
        if self._producer is None:
            from tests.conftest import task_registry

            self._producer = Producer.from_url(
                self.url, config=self.config(), registry=task_registry()
            )
        return self._producer

    async def close_producer(self) -> None:
        """Close the test's own Producer (the next `producer()` makes a fresh one)."""
        if self._producer is not None:
            await self._producer.close()
            self._producer = None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start_service(self, **env: str) -> None:
        if not self.port:
            self.port = free_port()
        e = base_env(self.url, self.prefix, TIDINGS_HTTP_PORT=str(self.port), **{**self.env, **env})
        self.service = self._spawn("service", [sys.executable, "-m", "service"], e)

        async def up() -> bool:
            assert self.service is not None
            if self.service.poll() is not None:
                raise AssertionError(f"service exited: {self.log('service')}")
            try:
                async with aiohttp.ClientSession() as s, s.get(self.http + "/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout=20, what="service ready")

    async def start_workers(
        self, processes: int = 1, *args: str, wait: bool = True, **env: str
    ) -> subprocess.Popen[bytes]:
        e = base_env(self.url, self.prefix, **{**self.env, **env})
        argv = [sys.executable, "-m", "workers", "--processes", str(processes), *args]
        p = self._spawn(f"workers-{len(self.workers)}", argv, e)
        self.workers.append(p)
        if wait:
            producer = await self.producer()
            want = processes

            async def registered() -> bool:
                return len(await producer.queries.workers()) >= want

            await eventually(registered, timeout=20, what="workers registered")
        return p

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    async def close(self) -> None:
        procs = [p for p in [*self.workers, self.service] if p is not None and p.poll() is None]
        for p in procs:
            with _suppress():
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self._producer is not None:
            await self._producer.close()
            self._producer = None  # closing twice is harmless


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


def worker_children(supervisor: subprocess.Popen[bytes]) -> list[int]:
    """Pids of the worker processes under a `python -m workers` supervisor."""
    out = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]
