"""`make run`: the embedded Redis (if configured), the service and the workers, together.

Ctrl-C stops everything it started: the workers first (they hand back running jobs), then the
service, then the Redis server (which flushes its AOF).
"""

from __future__ import annotations

import argparse
import sys

from service import config as config_mod
from service import embedded, logs
from service.procs import Child, Supervisor, child_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.stack", description=__doc__.splitlines()[0])
    p.add_argument("--config")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    logs.setup(cfg.log, process="stack")
    url = cfg.redis.url
    owned = None
    if url == "embedded":
        url = embedded.attach(cfg) or ""
        if not url:
            owned = embedded.start_owned(cfg)
            url = owned.url
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
