"""`make run`: the embedded Redis (if configured), the service and the workers, together.

Ctrl-C stops everything it started: the workers first (they hand back running jobs), then the
service, then the Redis server (which flushes its AOF).
"""

from __future__ import annotations

import argparse
import sys

from service.core import config as config_mod
from service.core import embedded, logs
from service.core.procs import Child, Supervisor, child_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.stack", description=__doc__.splitlines()[0])
    p.add_argument("--config")
    args = p.parse_args(argv)
    cfg = config_mod.load_or_exit(args.config)
    logs.setup(cfg.log, process="stack")
    url, owned = embedded.resolve(cfg)
    extra = ["--config", args.config] if args.config else []
    env = child_env(TIDINGS_REDIS_URL=url)
    children = [
        Child("service", [sys.executable, "-m", "service", *extra], env=env),
        Child("workers", [sys.executable, "-m", "workers", *extra], env=env),
    ]
    where = f"http://{cfg.http.host}:{cfg.http.port}/"
    print(f"\n  Tidings: {where}   (redis: {url})\n  Ctrl-C stops everything.\n", file=sys.stderr)
    try:
        return Supervisor(children, stop_timeout=cfg.workers.grace_s + 15).run()
    finally:
        if owned is not None:
            owned.stop()
            embedded.forget(cfg)


if __name__ == "__main__":
    sys.exit(main())
