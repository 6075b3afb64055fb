"""Producer against a real Redis (no workers): submit, idempotency, delays, listing, sync twin."""

from __future__ import annotations

import asyncio

import pytest

from service.core.config import Config
from service.core.errors import Conflict, Invalid, NotFound
from service.producer import Producer, SyncProducer
from tests.conftest import task_registry


async def test_submit_get_and_events(producer: Producer) -> None:
    job = await producer.submit("t.steps", {"n": 2})
    assert job.state == "queued" and job.attempt == 0 and job.max_attempts == 3
    assert job.payload == {"n": 2, "delay": 0.05}  # normalised through the task's type
    got = await producer.get(job.id)
    assert got.state == "queued" and got.created_at == job.created_at
    events = await producer.events(job.id)
    assert [e.type for e in events] == ["queued"]
    assert (await producer.queues())["default"].queued == 1


async def test_idempotency_key_returns_the_same_job(producer: Producer) -> None:
    a = await producer.submit_request(
        __import__("service.producer").producer.SubmitRequest(
            task="t.noop", payload={}, idempotency_key="k1"
        )
    )
    b = await producer.submit_request(
        __import__("service.producer").producer.SubmitRequest(
            task="t.noop", payload={"x": 1}, idempotency_key="k1"
        )
    )
    assert a.created and not b.created and a.job.id == b.job.id
    assert b.job.payload == {}  # the first submission wins
    assert (await producer.queues())["default"].queued == 1


async def test_many_concurrent_idempotent_submits_make_one_job(producer: Producer) -> None:
    jobs = await asyncio.gather(
        *(producer.submit("t.noop", {}, idempotency_key="race") for _ in range(50))
    )
    assert len({j.id for j in jobs}) == 1
    assert (await producer.queues())["default"].queued == 1


async def test_validation_errors_carry_the_field_path(producer: Producer) -> None:
    with pytest.raises(Invalid) as e:
        await producer.submit("t.steps", {"n": "x"})
    assert e.value.path == "$.payload.n"
    with pytest.raises(Invalid):
        await producer.submit("t.steps", {}, queue="bad queue")
    with pytest.raises(NotFound):
        await producer.get("nope")


async def test_delay_cancel_retry_and_listing(producer: Producer) -> None:
    later = await producer.submit("t.noop", {}, delay_s=30)
    assert later.state == "scheduled"
    assert (await producer.queues())["default"].scheduled == 1
    assert await producer.cancel(later.id) == "cancelled"
    with pytest.raises(Conflict):
        await producer.cancel(later.id)
    again = await producer.retry(later.id)
    assert again.state == "queued"
    jobs = [await producer.submit("t.noop", {}) for _ in range(5)]
    page, nxt = await producer.queries.list_jobs(limit=3)
    assert [j.id for j in page] == [j.id for j in reversed(jobs)][:3]
    rest, _ = await producer.queries.list_jobs(limit=10, cursor=nxt)
    assert [j.id for j in rest] == [*[j.id for j in reversed(jobs)][3:], later.id]
    queued, _ = await producer.queries.list_jobs(state="queued", limit=50)
    assert len(queued) == 6


async def test_submit_many_keeps_order(producer: Producer) -> None:
    jobs = await producer.submit_many([("t.steps", {"n": i}) for i in range(350)])
    assert [j.payload["n"] for j in jobs] == list(range(350))
    entries = await producer.redis.xrange(producer.keys.queue(0, "default"))
    assert [e[1][b"j"].decode() for e in entries] == [j.id for j in jobs]  # FIFO in the stream


def test_sync_producer(cfg: Config) -> None:
    import tests.tasks  # noqa: F401

    with SyncProducer.from_url(cfg.redis.url, config=cfg, registry=task_registry()) as p:
        job = p.submit("t.noop", {})
        assert p.get(job.id).state == "queued"
        assert p.queues()["default"].queued == 1
        assert p.cancel(job.id) == "cancelled"
        assert p.wait(job.id, timeout=5).state == "cancelled"


async def test_startup_check_warns_only_about_unsafe_servers(producer: Producer) -> None:
    from service.core.checks import warn_about_server

    r = producer.redis
    policy = (await r.config_get("maxmemory-policy"))["maxmemory-policy"]
    try:
        await r.config_set("maxmemory-policy", "noeviction")
        # the test server keeps no AOF and no RDB: that is the one warning
        assert [w for w in await warn_about_server(r)] == [
            "persistence is off (no AOF, no RDB): a Redis restart loses every job"
        ]
        await r.config_set("maxmemory-policy", "allkeys-lru")
        assert any("EVICT" in w for w in await warn_about_server(r))
    finally:
        await r.config_set("maxmemory-policy", policy)
