"""Redis memory per queued and per finished job, the same way for Tidings and for the peers.

Runs inside a peer's virtual env from the peers harness (kept outside this repository: $PEERS
names its folder, venvs under $PEERS_WORK) and uses that harness's adapters, so every system is
measured through its own public API:

    export PEERS=<the peers harness> PEERS_WORK=<its work folder>
    $PEERS_WORK/.venvs/saq/bin/python bench/peer_memory.py --peer saq --n 100000
    $PEERS_WORK/.venvs/bullmq/bin/python bench/peer_memory.py --peer bullmq --n 100000
    .venv/bin/python bench/peer_memory.py --peer tidings --n 100000

Starts its own redis-server on a free loopback port (no persistence), FLUSHALL, reads
`used_memory`, enqueues N no-op jobs (bulk API if the adapter has one, else one by one), reads it
again (per queued job), drains them with the adapter's 2 worker processes at default settings,
stops the workers, and reads it once more (per finished job, as each system retains it by
default). Prints one JSON line. Standard library + the harness only: no Tidings import here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PEERS = os.environ.get("PEERS", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def used_memory(r: object) -> int:
    return int(r.info("memory")["used_memory"])  # type: ignore[attr-defined]


async def measure(peer: str, n: int, port: int) -> dict[str, object]:
    import rawredis  # the harness's RESP client
    from driver import Workers  # the harness's worker process handling (pgid, SIGTERM/SIGKILL)

    mod = importlib.import_module(f"adapters.{peer}_peer")
    ad = mod.Adapter()
    r = rawredis.RawRedis(port)
    r.cmd("FLUSHALL")
    await ad.open()
    try:
        await asyncio.sleep(0.2)
        base = used_memory(r)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(1000, n - done)
            if ad.has_bulk:
                await ad.enqueue_bulk(k)
            else:
                for _ in range(k):
                    await ad.enqueue_one()
            done += k
        enqueue_s = time.perf_counter() - t0
        queued = used_memory(r)
        keys_queued = int(r.cmd("DBSIZE"))
        with tempfile.NamedTemporaryFile(prefix=f"{peer}-mem-", suffix=".log", delete=False) as f:
            log = f.name
        w = Workers(ad.worker_commands(2), log)
        try:
            deadline = time.monotonic() + 600
            while True:
                left = await ad.remaining(n, [])
                if left <= 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
        finally:
            w.stop()
        await asyncio.sleep(0.5)
        finished = used_memory(r)
        keys_finished = int(r.cmd("DBSIZE"))
    finally:
        await ad.close()
        r.close()
    return {
        "peer": peer,
        "n": n,
        "queued_bytes_per_job": round((queued - base) / n, 1),
        "finished_bytes_per_job": round((finished - base) / n, 1),
        "keys_queued": keys_queued,
        "keys_finished": keys_finished,
        "left_unfinished": left,
        "enqueue_s": round(enqueue_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument(
        "--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server"
    )
    a = ap.parse_args()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["REDIS_URL"] = url  # read by the adapters at import, inherited by the workers
    os.environ["REDIS_PORT"] = str(port)
    os.environ["TIDINGS_REDIS_URL"] = url
    os.environ["TIDINGS_CONFIG"] = "/dev/null"
    if not PEERS:
        raise SystemExit("set PEERS to the peers harness's folder (see the docstring)")
    sys.path.insert(0, PEERS)
    os.chdir(PEERS)
    server = subprocess.Popen(
        [a.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        res = asyncio.run(measure(a.peer, a.n, port))
        print(json.dumps(res), flush=True)
    finally:
        server.terminate()  # our own child, by pid
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
