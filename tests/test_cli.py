"""The `tidings` command as a user runs it, against real service and worker processes: under a
pseudo-terminal (a live bar that reaches 100 % and rides out a SIGKILL and restart of the
service), and without one (one line per event, JSON lines, tables, exit codes)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from service.client import Client
from service.core.embedded import free_port
from service.core.wire import FailedEvent, Job, decode_public
from tests.helpers import ROOT, Stack, eventually

pytestmark = pytest.mark.e2e
SCRIPT = Path(sys.executable).parent / "tidings"
FAST = {"TIDINGS_SSE_RETRY_MS": "200"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\r")


def argv(*args: str) -> list[str]:
    """The installed console script (what `pip install` gives a user)."""
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e . installs the tidings command"
    return [str(SCRIPT), *args]


def cli_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({"TIDINGS_URL": base_url, "PYTHONPATH": str(ROOT), **extra})
    return env


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin, stdout and stderr (120x30); its exit
    status and everything it wrote, ANSI escapes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"},
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"timed out under a pty: {ANSI.sub('', out.decode())[-2000:]}")
        code = proc.wait(10)
    finally:
        os.close(master)
    return code, ANSI.sub("", out.decode("utf-8", "replace"))


async def run(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    """Run a command with pipes (no terminal): its status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bar_on_a_terminal_reaches_100_and_rides_out_a_service_restart(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url, **FAST)
    await asyncio.gather(st.start_service(), st.start_workers(1))
    env = cli_env(st.http)
    p = await st.producer()

    # the headline: submit and watch in one go
    code, screen = await asyncio.to_thread(
        run_in_pty,
        argv("submit", "demo.count", "--payload", '{"n": 8, "delay": 0.05}', "--watch"),
        env,
    )
    assert code == 0, screen
    assert re.search(r"100%\s+8/8", screen), screen
    assert "step 8" in screen and "succeeded" in screen

    # a longer job, and the service SIGKILLed and restarted while the bar is up
    async with Client(st.http) as c:
        job = await c.submit("t.steps", {"n": 60, "delay": 0.05})
        watching = asyncio.create_task(asyncio.to_thread(run_in_pty, argv("watch", job.id), env))

        async def progressed(at_least: int) -> bool:
            return ((await p.get(job.id)).progress.current or 0) >= at_least

        await eventually(lambda: progressed(5), what="the job under way")
        assert st.service is not None
        os.killpg(st.service.pid, signal.SIGKILL)
        await asyncio.to_thread(st.service.wait)
        now = (await p.get(job.id)).progress.current or 0
        await eventually(lambda: progressed(int(now) + 5), what="progress while down")
        await st.start_service(**FAST)
        code, screen = await asyncio.wait_for(watching, 60)
    assert code == 0, screen
    assert "reconnecting" in screen, screen
    assert re.search(r"100%\s+60/60", screen), screen
    assert re.search(r"succeeded\s+" + job.id, screen), screen
    # a job that cannot finish well: the bar ends in its state, and so does the exit status
    code, screen = await asyncio.to_thread(
        run_in_pty,
        argv(
            "submit", "t.fail", "--payload", '{"message": "nope"}', "--max-attempts", "1", "--watch"
        ),
        env,
    )
    assert code == 1 and "ValueError: nope" in screen, screen


async def test_off_a_terminal_lines_json_tables_and_exit_codes(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url)
    await asyncio.gather(st.start_service(), st.start_workers(1))
    env = cli_env(st.http)
    p = await st.producer()

    code, out, err = await run(
        argv("submit", "t.steps", "--payload", '{"n": 3, "delay": 0.01}', "--watch"), env
    )
    assert code == 0, err
    lines = out.splitlines()
    job_id = lines[0]
    assert re.fullmatch(r"[0-9a-z]{26}", job_id), out
    types = [line.split()[1] for line in lines[1:]]
    # progress reports closer than worker.progress_interval_s may be coalesced (newest wins)
    assert types[:2] == ["queued", "started"] and types[-1] == "succeeded"
    assert 1 <= types.count("progress") <= 3 and len(types) == types.count("progress") + 3
    assert "3/3 (100%) step 3" in lines[-2] and '{"n":3,"attempt":1}' in lines[-1]

    # --json: each line is an event's data, as the SSE stream carries it
    code, out, err = await run(argv("watch", job_id, "--json"), env)
    assert code == 0, err
    events = [decode_public(line.encode()) for line in out.splitlines()]
    _, stored = await p.snapshot(job_id)
    assert [type(e).__name__.removesuffix("Event").lower() for e in events] == [
        e.type for e in stored
    ]
    code, out, _ = await run(argv("--json", "get", job_id), env)
    job = msgspec.json.decode(out.encode(), type=Job)
    assert code == 0 and job.state == "succeeded" and job.result == {"n": 3, "attempt": 1}

    # failed: 1
    code, out, err = await run(
        argv("submit", "t.fail", "--payload", "{}", "--max-attempts", "1", "--watch", "--json"),
        env,
    )
    assert code == 1, (out, err)
    failed = decode_public(out.splitlines()[-1].encode())
    assert isinstance(failed, FailedEvent)

    # cancelled: 2 (cancelled with `tidings cancel` while `tidings watch` follows it)
    sleeper = (await p.submit("t.sleep", {"seconds": 60})).id
    watching = asyncio.create_task(run(argv("watch", sleeper), env))

    async def running() -> bool:
        return (await p.get(sleeper)).state == "running"

    await eventually(running, what="the sleeper running")
    code, out, err = await run(argv("cancel", sleeper), env)
    # "cancellation requested" (202), or "cancelled" if the worker was quicker than the answer
    assert code == 0 and re.search(r": cancel(lation requested|led)$", out.strip()), (out, err)
    code, out, err = await asyncio.wait_for(watching, 30)
    assert code == 2, (out, err)
    assert out.splitlines()[-1].split()[1] == "cancelled"

    # tables and lists; errors: no such job (4), a job gone after our position (3)
    jobs, queues, dead, missing, gone = await asyncio.gather(
        run(argv("jobs", "--state", "succeeded"), env),
        run(argv("queues"), env),
        run(argv("dead", "default", "--json"), env),
        run(argv("get", "0" * 26), env),
        run(argv("watch", "0" * 26, "--last-event-id", "1-0"), env),
    )
    assert jobs[0] == 0 and job_id in jobs[1] and "t.steps" in jobs[1], jobs
    assert queues[0] == 0 and re.search(r"default\s+0\s+0\s+0\s+1\s+1", queues[1]), queues
    assert dead[0] == 0 and failed.job in dead[1], dead
    assert missing[0] == 4 and "HTTP 404" in missing[2], missing
    assert gone[0] == 3 and "no longer exists" in gone[2], gone


async def test_usage_help_and_an_unreachable_service() -> None:
    env = cli_env(f"http://127.0.0.1:{free_port()}")
    code, out, _ = await run(argv("--help"), env)
    assert code == 0 and "exit status" in out and "submit" in out and "watch" in out
    code, out, _ = await run(argv("submit", "--help"), env)
    assert code == 0 and "--payload JSON" in out and "--watch" in out
    code, out, _ = await run(argv("serve", "--help"), env)
    assert code == 0 and "python -m service" in out  # handed over as it is
    code, _, err = await run(argv("submit", "t.steps", "--payload", "{oops"), env)
    assert code == 5 and "not JSON" in err, err
    code, _, err = await run(argv("get", "0" * 26), env)
    assert code == 4 and "cannot reach" in err, err
