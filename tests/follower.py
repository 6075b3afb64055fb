"""`python -m tests.follower URL PREFIX JOB_ID`: follow one job with `Producer.watch` and
`Producer.wait` in a process of its own, so a test can freeze it (SIGSTOP) like any other.

Prints one line per watched event (`follow: ` and JSON `{"id", "type"}`), then `{"wait": state}` once `wait`
returned, or `{"error": ...}`; exits 0 when both ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from service.core import config as config_mod
from service.producer import Producer

MARK = "follow: "  # log lines from the library go to the same stream


def say(obj: object) -> None:
    print(MARK + json.dumps(obj), flush=True)


async def follow(url: str, prefix: str, job_id: str, timeout: float) -> int:
    environ = {"TIDINGS_REDIS_URL": url, "TIDINGS_REDIS_PREFIX": prefix}
    cfg = config_mod.load(os.devnull, environ=environ)
    async with Producer.from_url(url, config=cfg) as p:

        async def watching() -> None:
            async for ev in p.watch(job_id):
                say({"id": ev.id, "type": ev.type})

        watch = asyncio.create_task(watching())
        try:
            job = await p.wait(job_id, timeout=timeout)
            await asyncio.wait_for(watch, timeout)
        except Exception as e:
            say({"error": repr(e)})
            return 1
        say({"wait": job.state})
        return 0


if __name__ == "__main__":
    url, prefix, job_id = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    sys.exit(asyncio.run(follow(url, prefix, job_id, timeout)))
