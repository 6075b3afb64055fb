"""Child processes that never outlive their parent, and a small supervisor for them.

Used by `python -m workers --processes N`, `http.processes = N` and `make run`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("tidings.supervisor")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (preexec_fn): get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            list(self.argv),
            env=self.env,
            start_new_session=True,  # signals come from us, in order, not from the terminal
            preexec_fn=die_with_parent,
        )
        self.started_at = time.monotonic()
        log.info("child.started", child=self.name, pid=self.proc.pid)


class Supervisor:
    """Start children, restart those that die (with backoff), forward SIGTERM/SIGINT, and wait
    for all of them to exit. Children are stopped in reverse order of start."""

    def __init__(self, children: list[Child], *, stop_timeout: float = 30.0) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self._stopping = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stopping:
            # a second Ctrl-C: stop now
            for c in self.children:
                if c.proc is not None and c.proc.poll() is None:
                    c.proc.kill()
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for c in self.children:
            c.spawn()
        while not self._stopping:
            time.sleep(0.1)
            now = time.monotonic()
            for c in self.children:
                if c.proc is None:
                    if now >= c.next_start:
                        c.spawn()
                    continue
                rc = c.proc.poll()
                if rc is None:
                    if c.failures and now - c.started_at > 10:
                        c.failures = 0  # it ran a while: not a crash loop
                    continue
                if not c.restart:
                    log.error("child.exited", child=c.name, code=rc)
                    self._stopping = True
                    break
                c.failures += 1
                delay = min(30.0, 0.5 * 2 ** (c.failures - 1))
                log.warning("child.died", child=c.name, code=rc, restart_in=delay)
                c.proc = None
                c.next_start = now + delay
        return self.stop()

    def stop(self) -> int:
        rc = 0
        for c in reversed(self.children):
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
                try:
                    c.proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("child.kill", child=c.name)
                    c.proc.kill()
                    c.proc.wait()
            if c.proc is not None and c.proc.returncode not in (0, -signal.SIGTERM):
                rc = 1
        return rc


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
