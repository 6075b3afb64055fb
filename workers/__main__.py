"""`python -m workers`: a supervisor with N worker processes.

python -m workers [--config PATH] [--tasks MOD ...] [--processes N] [--concurrency M]
                  [--queues q1,q2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import structlog

from service import config as config_mod
from service import embedded, logs
from service.procs import Child, Supervisor, child_env
from workers.registry import REGISTRY, load_modules

log = structlog.get_logger("tidings.worker")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: $TIDINGS_CONFIG or ./config.toml)")
    p.add_argument("--tasks", nargs="+", help="modules that define tasks (default: workers.tasks)")
    p.add_argument("--processes", type=int, help="worker processes (default: workers.processes)")
    p.add_argument(
        "--concurrency", type=int, help="jobs at once per process (default: workers.concurrency)"
    )
    p.add_argument("--queues", help="comma-separated queues (default: workers.queues)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = config_mod.load_or_exit(args.config)
    logs.setup(cfg.log, process="worker" if args.child else "workers")
    tasks = args.tasks or cfg.workers.tasks
    queues = (
        [q.strip() for q in args.queues.split(",")] if args.queues else list(cfg.workers.queues)
    )
    if args.child:
        return run_child(cfg, tasks, queues, args.concurrency or cfg.workers.concurrency)
    url, owned = embedded.resolve(cfg)
    n = args.processes or cfg.workers.processes
    argv_child = [
        sys.executable,
        "-m",
        "workers",
        "--child",
        "--tasks",
        *tasks,
        "--queues",
        ",".join(queues),
    ]
    if args.concurrency:
        argv_child += ["--concurrency", str(args.concurrency)]
    env = child_env(TIDINGS_REDIS_URL=url)
    if args.config:
        env["TIDINGS_CONFIG"] = os.path.abspath(args.config)
    sup = Supervisor(
        [Child(f"worker-{i}", argv_child, env=env) for i in range(n)],
        stop_timeout=cfg.workers.grace_s + 15,
    )
    try:
        return sup.run()
    finally:
        if owned is not None:
            owned.stop()
            embedded.forget(cfg)


def run_child(cfg: config_mod.Config, tasks: list[str], queues: list[str], concurrency: int) -> int:
    from workers.runner import Worker

    load_modules(tasks)
    if cfg.redis.url == "embedded":
        url = embedded.attach(cfg)
        if url is None:
            print("redis.url is 'embedded' but no embedded server is running", file=sys.stderr)
            return 2
    else:
        url = cfg.redis.url
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def go() -> None:
        worker = Worker(cfg, url, dict(REGISTRY), queues=queues, concurrency=concurrency)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        hits = 0

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            stop.set()
            if hits > 1:  # second signal: do not wait for the grace period
                for job in list(worker.running.values()):
                    worker._cancel(job, "shutdown")

        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, on_signal)
        await worker.run(stop)

    asyncio.run(go())
    sys.stderr.flush()
    # threads of plain-def tasks that overran cannot be killed; do not wait for them
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
