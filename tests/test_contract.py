"""The Redis contract: ids, key layout, event ids, and the module boundary."""

from __future__ import annotations

import subprocess
import sys
import time

from service import contract
from service.contract import Keys, parse_event_id


def test_job_ids_are_unique_sortable_and_valid() -> None:
    ids = [contract.new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(contract.JOB_ID_RE.match(i) for i in ids)
    earlier = contract.new_job_id()
    time.sleep(0.002)
    assert contract.new_job_id()[:10] > earlier[:10]


def test_idempotent_ids_depend_on_key_and_prefix() -> None:
    a = contract.idempotent_job_id("p", "order-1")
    assert a == contract.idempotent_job_id("p", "order-1")
    assert a != contract.idempotent_job_id("p", "order-2")
    assert a != contract.idempotent_job_id("q", "order-1")
    assert contract.JOB_ID_RE.match(a)


def test_every_key_of_a_job_shares_its_partition_tag() -> None:
    keys = Keys("tid", partitions=16)
    seen = set()
    for _ in range(200):
        jid = contract.new_job_id()
        k = keys.partition(jid)
        seen.add(k)
        tag = f"{{tid:{k}}}"
        for name in (
            keys.job(jid),
            keys.events(jid),
            keys.queue(k, "q"),
            keys.fire(k),
            keys.sched(k, "q"),
        ):
            assert name.startswith(tag + ":"), name
    assert len(seen) == 16  # spread over every partition


def test_event_ids_parse_strictly() -> None:
    assert parse_event_id("1764343200000-3") == (1764343200000, 3)
    assert parse_event_id(b"5-0") == (5, 0)
    for bad in [
        "",
        "1",
        "1-",
        "-1",
        "a-b",
        "1-2-3",
        " 1-2",
        "1-2 ",
        "9" * 21 + "-0",
        "1-99999999999999999999",
    ]:
        assert parse_event_id(bad) is None, bad


def test_shared_modules_do_not_import_aiohttp() -> None:
    code = (
        "import sys, service.contract, service.config, service.producer, service.hub, "
        "service.auth, workers, workers.runner, workers.demo; "
        "assert 'aiohttp' not in sys.modules, [m for m in sys.modules if 'aiohttp' in m]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
