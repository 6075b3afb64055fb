"""`python -m service [--config PATH]`: the HTTP service (API, SSE, dashboard)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys

import structlog
from aiohttp import web

from service.core import config as config_mod
from service.core import embedded, logs
from service.core.procs import Child, Supervisor, child_env

log = structlog.get_logger("tidings.http")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: $TIDINGS_CONFIG or ./config.toml)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = config_mod.load_or_exit(args.config)
    logs.setup(cfg.log, process="service")
    if not cfg.auth.api_keys and not is_loopback(cfg.http.host):
        print(
            f"http.host: refusing to serve {cfg.http.host} without auth.api_keys "
            "(set keys, or bind 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    url, owned = embedded.resolve(cfg)
    try:
        if cfg.http.processes > 1 and not args.child:
            argv_child = [sys.executable, "-m", "service", "--child"]
            env = child_env(TIDINGS_REDIS_URL=url)
            if args.config:
                env["TIDINGS_CONFIG"] = os.path.abspath(args.config)
            children = [Child(f"http-{i}", argv_child, env=env) for i in range(cfg.http.processes)]
            return Supervisor(children, stop_timeout=10).run()
        serve(cfg, url, reuse_port=cfg.http.processes > 1)
        return 0
    finally:
        if owned is not None:
            owned.stop()
            embedded.forget(cfg)


def serve(cfg: config_mod.Config, url: str, *, reuse_port: bool) -> None:
    from service.core import tracing
    from service.http.app import create_app
    from workers.registry import load_modules

    # the composition root: the task modules named in workers.tasks give submit-time validation
    registry = load_modules(cfg.workers.tasks)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    spans = tracing.from_env("tidings-service")

    async def go() -> None:
        app = create_app(cfg, url, registry, tracing=spans)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=5, keepalive_timeout=cfg.http.keepalive_s
        )
        await runner.setup()
        site = web.TCPSite(
            runner, cfg.http.host, cfg.http.port, reuse_port=reuse_port, backlog=4096
        )
        await site.start()
        log.info(
            "service.listening", url=f"http://{cfg.http.host}:{cfg.http.port}", pid=os.getpid()
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in ("SIGTERM", "SIGINT"):
            loop.add_signal_handler(getattr(__import__("signal"), s), stop.set)
        await stop.wait()
        log.info("service.stopping")
        await runner.cleanup()

    try:
        asyncio.run(go())
    finally:
        spans.shutdown()


if __name__ == "__main__":
    sys.exit(main())
