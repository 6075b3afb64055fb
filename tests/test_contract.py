"""The Redis contract, pinned: ids, keys and their spread over slots, the state machine shared by
Python and Lua, every script op against a real Redis (its effect, that it touched only the keys it
declared, that a re-sent call changes nothing), and that every event decodes strictly."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Any

import msgspec
import pytest
import redis.exceptions

from service.core import scripts as S
from service.core import wire
from service.core.keys import SLOTS, Keys
from service.core.states import STATES, TRANSITIONS
from service.producer import Producer

# -- ids, keys, slots -------------------------------------------------------------------------


def test_job_ids_are_unique_sortable_valid_and_carry_their_time() -> None:
    ids = [wire.new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(wire.JOB_ID_RE.match(i) for i in ids)
    earlier = wire.new_job_id()
    time.sleep(0.002)
    assert wire.new_job_id()[:10] > earlier[:10]
    now = int(time.time() * 1000)
    assert abs(wire.job_id_time_ms(wire.new_job_id()) - now) < 1000


def test_idempotent_ids_depend_on_key_and_prefix() -> None:
    # the same key gives the same id in every release (this one was made by the first encoder)
    assert wire.idempotent_job_id("tidings", "abc") == "atf03r99sp64sx1pds8f9ef6na"
    assert wire.job_id_time_ms(wire.new_job_id(1796037800123)) == 1796037800123
    a = wire.idempotent_job_id("p", "order-1")
    assert a == wire.idempotent_job_id("p", "order-1")
    assert a != wire.idempotent_job_id("p", "order-2")
    assert a != wire.idempotent_job_id("q", "order-1")
    assert wire.JOB_ID_RE.match(a)


def test_every_key_of_a_job_shares_its_partition_slot() -> None:
    keys = Keys("tid", partitions=16)
    seen = set()
    for _ in range(300):
        jid = wire.new_job_id()
        k = keys.partition(jid)
        seen.add(k)
        names = [keys.job(jid), keys.queue(k, "q"), keys.fire(k), keys.sched(k, "q")]
        names += [keys.due(k), keys.dead(k, "q"), keys.index(k), keys.stats(k)]
        names.append(keys.trend(k, 123))
        assert {keys_slot(n) for n in names} == {keys.slot(k)}
    assert len(seen) == 16
    deployment = [keys.queues(), keys.workers(), keys.worker("w1"), keys.tasks(), keys.paused()]
    deployment.append(keys.rate("abc", 1))
    assert len({keys_slot(n) for n in deployment}) == 1


def keys_slot(name: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(name.encode()))


@pytest.mark.parametrize("partitions", [3, 6, 16, 64])
def test_partitions_spread_evenly_over_any_even_split_of_slots(partitions: int) -> None:
    keys = Keys("tidings", partitions)
    slots = sorted(keys.slot(k) for k in range(partitions))
    for masters in (3, 4, 5):
        # the split redis-cli --cluster create makes: equal ranges in slot order
        bounds = [round(SLOTS * (i + 1) / masters) for i in range(masters)]
        counts = [0] * masters
        for s in slots:
            counts[next(i for i, b in enumerate(bounds) if s < b)] += 1
        assert max(counts) - min(counts) <= 1, (masters, counts)


def test_event_ids_parse_strictly() -> None:
    assert wire.parse_event_id("1764343200000-3") == (1764343200000, 3)
    assert wire.parse_event_id(b"5-0") == (5, 0)
    bad = [
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
    ]
    for b in bad:
        assert wire.parse_event_id(b) is None, b


# -- one state machine ----------------------------------------------------------------------


def _lua() -> dict[str, str]:
    base = resources.files("service.core").joinpath("lua")
    return {p.name: p.read_text() for p in base.iterdir() if p.name.endswith(".lua")}


def test_the_lua_names_only_states_of_the_contract_and_reaches_every_one() -> None:
    src = "\n".join(_lua().values())
    set_to = set(re.findall(r"set_state\(j, '(\w+)'\)", src))
    compared = set(re.findall(r"j\.s [~=]= '(\w+)'", src))
    assert set_to | compared <= set(STATES), (set_to | compared) - set(STATES)
    targets = {t for tos in TRANSITIONS.values() for t in tos}
    assert targets <= set_to, f"states no script ever enters: {targets - set_to}"
    assert set(TRANSITIONS) == {"", *STATES}


def test_the_lua_emits_only_stored_event_tags_of_the_contract() -> None:
    src = "\n".join(_lua().values())
    tags = set(re.findall(r"""emit\(j, '\["(\w+)\"""", src))
    assert tags and tags <= set(wire.STORED_TAGS), tags - set(wire.STORED_TAGS)


def test_every_stored_event_has_a_public_form_that_decodes_strictly() -> None:
    raw = msgspec.Raw(b'{"type":"E","message":"m"}')
    samples: list[wire.Stored] = [
        wire.SQueued(0),
        wire.SQueued(1, "handed back"),
        wire.SScheduled(0, 1_764_343_200_000),
        wire.SStarted(1, "host:1:ab"),
        wire.SProgress(1, 3, 10, "step 3"),
        wire.SProgress(1, 0.5),
        wire.SLog(1, "hello"),
        wire.SRetrying(1, raw, 1_764_343_200_000),
        wire.SRetrying(1, raw),
        wire.SSucceeded(1, msgspec.Raw(b"null")),
        wire.SFailed(2, raw),
        wire.SCancelled(1),
    ]
    assert {type(s) for s in samples} == set(wire.Stored.__args__)
    for s in samples:
        body = wire.encode_stored(s)
        again = wire.decode_stored(body)
        assert wire.encode_stored(again) == body
        data = wire.encode_public(wire.public("j" * 26, "t.x", "q", b"1764343200000-0", again))
        event = wire.decode_public(data)
        assert not isinstance(event, wire.StatsEvent)  # the firehose's figures: no job
        assert event.job == "j" * 26


def test_transitions_outside_the_contract_are_refused_by_the_scripts() -> None:
    assert "refuses any transition" in _lua()["common.lua"]
    assert "ALLOWED[from][to]" in _lua()["events.lua"]


# -- layering ---------------------------------------------------------------------------------


def test_layers_point_one_way() -> None:
    code = """
import sys, pkgutil, importlib
import service.core, workers
for m in pkgutil.walk_packages(service.core.__path__, 'service.core.'):
    importlib.import_module(m.name)
for name in ('service.producer', 'service.queries', 'workers.worker', 'workers.supervisor',
             'workers.demo'):
    importlib.import_module(name)
bad = [m for m in sys.modules if m.startswith(('aiohttp', 'service.http', 'service.sse'))]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    core = resources.files("service")
    for pkg in ("core", "http", "sse"):
        for p in core.joinpath(pkg).iterdir():
            if p.name.endswith(".py"):
                text = p.read_text()
                assert not re.search(r"^(from|import) workers", text, re.M), p.name
    for p in resources.files("workers").iterdir():
        if p.name.endswith(".py"):
            assert not re.search(r"service\.(http|sse)", p.read_text()), p.name


# -- every op against Redis, watched with MONITOR ---------------------------------------------


class Monitor:
    """Every command Redis runs (scripts' inner commands included), with the keys each names
    (COMMAND GETKEYS), read over a raw MONITOR connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[list[str]] = []
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._buf = b""
        self._read_until(lambda: self._buf.startswith(b"+OK\r\n"))
        self._buf = self._buf[5:]

    def _read_until(self, done: Any, timeout: float = 5.0) -> None:
        self._sock.settimeout(timeout)
        while not done():
            self._buf += self._sock.recv(65536)

    def drain(self, marker: str) -> list[list[str]]:
        """Commands up to (not including) a PING carrying `marker`."""
        out: list[list[str]] = []
        while True:
            if b"\r\n" not in self._buf:
                self._read_until(lambda: b"\r\n" in self._buf)
            line, self._buf = self._buf.split(b"\r\n", 1)
            args = _monitor_args(line.decode("utf-8", "replace"))
            if args[:2] == ["PING", marker] or args[:2] == ["ping", marker]:
                return out
            out.append(args)

    def close(self) -> None:
        self._sock.close()


def _monitor_args(line: str) -> list[str]:
    # +1764343200.123456 [0 lua] "HMGET" "key" "s"
    body = line.split("] ", 1)[1] if "] " in line else line
    out = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', body):
        out.append(re.sub(r"\\(x[0-9a-f]{2}|.)", lambda x: _unescape(x.group(1)), m.group(1)))
    return out


def _unescape(s: str) -> str:
    if s.startswith("x") and len(s) == 3:
        return chr(int(s[1:], 16))
    return {"n": "\n", "r": "\r", "t": "\t"}.get(s, s)


@pytest.fixture
async def monitored(producer: Producer) -> AsyncIterator[tuple[Producer, Monitor]]:
    port = producer.redis.connection_pool.connection_kwargs["port"]
    m = Monitor(port)
    yield producer, m
    m.close()


async def run_checked(p: Producer, m: Monitor, call: S.Call[Any]) -> Any:
    """Run a script op; assert every key its inner commands named was declared in KEYS."""
    r = p.redis
    await r.script_load(call.script.source)
    before = f"mark-{time.monotonic_ns()}"
    await r.execute_command("PING", before)
    await asyncio.to_thread(m.drain, before)  # forget what ran before this call
    marker = f"mark-{time.monotonic_ns()}"
    res = await call.run(r)
    await r.execute_command("PING", marker)
    lines = await asyncio.to_thread(m.drain, marker)
    declared = set(call.keys)
    touched: set[str] = set()
    in_script = False
    for args in lines:
        if args and args[0].upper() == "EVALSHA":
            in_script = args[1] == call.script.sha
            continue
        if not in_script or not args or args[0].upper() in ("TIME", "PING"):
            continue
        try:
            got = await r.command_getkeys(*args)
        except redis.exceptions.ResponseError as e:
            assert "no key arguments" in str(e), e
            continue
        touched.update(k.decode() if isinstance(k, bytes) else k for k in got)
    assert touched, f"{call.script.name}: no inner commands seen"
    assert touched <= declared, f"{call.script.name} touched undeclared {touched - declared}"
    return res


async def fetch(p: Producer, consumer: str, queue: str = "default") -> list[S.Entry]:
    with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: made before
        await p.redis.xgroup_create(p.keys.queue(0, queue), S.GROUP, id="0", mkstream=True)
    resp = await p.redis.xreadgroup(S.GROUP, consumer, {p.keys.queue(0, queue): ">"}, count=100)
    return [
        S.Entry(f[b"j"].decode(), queue, eid.decode()) for _, entries in resp for eid, f in entries
    ]


def minute() -> int:
    return int(time.time() // 60)


async def all_events_decode(p: Producer, job_id: str) -> list[str]:
    """Every event of the job, in its hash and in the firehose, decodes strictly; their types."""
    _job, events = await p.snapshot(job_id)
    types = []
    for e in events:
        stored = e.decode()
        wire.decode_public(wire.encode_public(wire.public(job_id, "t", "q", e.id, stored)))
        types.append(wire.stored_type(stored))
    for _eid, f in await p.redis.xrange(p.keys.fire(0)):
        if f[b"j"].decode() == job_id:
            wire.decode_stored(f[b"v"])
    return types


async def test_the_stale_fetch_fence_is_exact_for_a_batch_in_any_order(
    monitored: tuple[Producer, Monitor],
) -> None:
    """start checks a batch's entries with one XPENDING per queue over the batch's range, and
    an entry missing from that answer alone: the verdicts are exact whatever the entries'
    order, and an entry another consumer took over in the middle of the range is fenced."""
    p, m = monitored
    news = [await p._prepare(_req("t.noop")) for _ in range(6)]
    await run_checked(p, m, p.ops.submit(0, news))
    entries = await fetch(p, "w1")
    assert len(entries) == 6
    # the third entry was taken over by w2 (its lease ran out while w1's start was in flight)
    q = p.keys.queue(0, "default")
    await p.redis.xclaim(q, S.GROUP, "w2", 0, [entries[2].entry])
    first = await run_checked(p, m, p.ops.start(0, "w1", entries[:4], minute()))
    assert [r.verdict for r in first] == ["run", "run", "notmine", "run"]
    # the rest given last-first: the range is empty, each entry is checked alone
    rest = await run_checked(p, m, p.ops.start(0, "w1", entries[:3:-1], minute()))
    assert [r.verdict for r in rest] == ["run", "run"]
    # w2 holds the third: its start runs it; w1's claims on the others are not w2's
    mine = await run_checked(p, m, p.ops.start(0, "w2", entries[1:4], minute()))
    assert [r.verdict for r in mine] == ["notmine", "run", "notmine"]


async def test_submit_start_progress_finish_touch_only_declared_keys(
    monitored: tuple[Producer, Monitor],
) -> None:
    p, m = monitored
    ops = p.ops
    new = await p._prepare(_req("t.noop"))
    rows = await run_checked(p, m, ops.submit(0, [new]))
    assert rows[0].created == 1 and rows[0].state == "queued"
    again = await run_checked(p, m, ops.submit(0, [new]))  # a re-sent call: nothing new
    assert again[0].created == 0
    (entry,) = await fetch(p, "w1")
    st = await run_checked(p, m, ops.start(0, "w1", [entry], minute()))
    assert st[0].verdict == "run" and st[0].run == 1 and st[0].attempt == 1
    st2 = await run_checked(p, m, ops.start(0, "w1", [entry], minute()))
    assert st2[0].verdict == "again" and st2[0].run == 1  # a re-sent start: no new attempt
    stale = await run_checked(p, m, ops.start(0, "w2", [entry], minute()))
    assert stale[0].verdict == "notmine"  # a consumer that does not hold the entry: fenced
    body = wire.encode_stored(wire.SProgress(1, 1, 2, "half"))
    writes = [
        S.Write("p", new.id, "default", 1, 1, body, "1", "2", "half"),
        S.Write("l", new.id, "default", 1, 2, wire.encode_stored(wire.SLog(1, "hi"))),
        S.Write("f", new.id, "default", 1, 3, b'{"ok":1}', "succeeded", 0),
    ]
    assert await run_checked(p, m, ops.apply(0, writes, minute())) == ["ok", "ok", "succeeded"]
    assert await run_checked(p, m, ops.apply(0, writes, minute())) == ["dup", "dup", "succeeded"]
    late = [S.Write("p", new.id, "default", 0, 9, body, "1", "2", "")]
    assert await run_checked(p, m, ops.apply(0, late, minute())) == ["fenced"]
    assert await all_events_decode(p, new.id) == [
        "queued",
        "started",
        "progress",
        "log",
        "succeeded",
    ]
    job = await p.get(new.id)
    assert job.state == "succeeded" and job.result == {"ok": 1} and job.progress.current == 1
    assert await p.redis.xlen(p.keys.queue(0, "default")) == 0  # acknowledged and deleted
    assert 0 < await p.redis.pttl(p.keys.job(new.id)) <= p.limits.retention_ms


async def test_retry_backoff_promote_dead_letter_and_retry_again(
    monitored: tuple[Producer, Monitor],
) -> None:
    p, m = monitored
    ops = p.ops
    new = await p._prepare(_req("t.noop", max_attempts=2))
    await run_checked(p, m, ops.submit(0, [new]))
    (e1,) = await fetch(p, "w1")
    await run_checked(p, m, ops.start(0, "w1", [e1], minute()))
    err = b'{"type":"E","message":"boom"}'
    fail = [S.Write("f", new.id, "default", 1, 1, err, "error", 0)]
    assert await run_checked(p, m, ops.apply(0, fail, minute())) == ["scheduled"]
    ids = await p.redis.zrange(p.keys.sched(0, "default"), 0, -1)
    assert [i.decode() for i in ids] == [new.id]
    assert await run_checked(p, m, ops.promote(0, "default", [new.id])) == 1
    assert await run_checked(p, m, ops.promote(0, "default", [new.id])) == 0  # idempotent
    (e2,) = await fetch(p, "w1")
    st = await run_checked(p, m, ops.start(0, "w1", [e2], minute()))
    assert st[0].attempt == 2 and st[0].run == 2
    fail2 = [S.Write("f", new.id, "default", 2, 1, err, "error", 0)]
    assert await run_checked(p, m, ops.apply(0, fail2, minute())) == ["failed"]
    assert await p.redis.zscore(p.keys.dead(0, "default"), new.id) is not None
    rid = S.new_request_id()
    done = await run_checked(p, m, ops.retry(new.id, "default", rid))
    assert done.status == "done"
    assert (await run_checked(p, m, ops.retry(new.id, "default", rid))).status == "done"
    assert (await run_checked(p, m, ops.retry(new.id, "default", "other"))).status == "conflict"
    assert await p.redis.zscore(p.keys.dead(0, "default"), new.id) is None
    assert await all_events_decode(p, new.id) == [
        "queued",
        "started",
        "retrying",
        "queued",
        "started",
        "failed",
        "queued",
    ]


async def test_takeover_renew_cancel_and_defer(monitored: tuple[Producer, Monitor]) -> None:
    p, m = monitored
    ops = p.ops
    new = await p._prepare(_req("t.noop", max_attempts=1))
    await run_checked(p, m, ops.submit(0, [new]))
    (e1,) = await fetch(p, "w1")
    await run_checked(p, m, ops.start(0, "w1", [e1], minute()))
    assert await run_checked(p, m, ops.renew(0, "w1", [(new.id, "default", 1)])) == ["ok"]
    # w2 takes the entry over (the lease ran out); attempts are used up: the job fails
    await p.redis.xclaim(p.keys.queue(0, "default"), S.GROUP, "w2", 0, [e1.entry])
    st = await run_checked(p, m, ops.start(0, "w2", [e1], minute()))
    assert st[0].verdict == "dead"
    assert await run_checked(p, m, ops.renew(0, "w1", [(new.id, "default", 1)])) == ["lost"]
    assert (await p.get(new.id)).error["type"] == "WorkerLost"
    # cancel: queued now; a re-sent cancel answers the same; a finished job is a conflict
    q = await p._prepare(_req("t.noop"))
    await run_checked(p, m, ops.submit(0, [q]))
    rid = S.new_request_id()
    assert (await run_checked(p, m, ops.cancel(q.id, "default", rid, minute()))).status == "done"
    assert (await run_checked(p, m, ops.cancel(q.id, "default", rid, minute()))).status == "done"
    other = await run_checked(p, m, ops.cancel(q.id, "default", "x", minute()))
    assert other.status == "finished"
    # defer: a worker without the task puts the job aside, still queued, for another worker
    d = await p._prepare(_req("t.noop"))
    await run_checked(p, m, ops.submit(0, [d]))
    entries = [e for e in await fetch(p, "w3") if e.id == d.id]
    verdict = await run_checked(p, m, ops.defer(0, entries[0], "w3", 0, "no task here"))
    assert verdict == "deferred"
    assert (await p.get(d.id)).state == "queued"
    await asyncio.sleep(0.01)
    assert await run_checked(p, m, ops.promote(0, "default", [d.id])) == 1
    assert [e.id for e in await fetch(p, "w4")] == [d.id]
    assert await all_events_decode(p, d.id) == ["queued", "queued"]


async def test_register_queue_caps_the_number_of_queues(
    monitored: tuple[Producer, Monitor],
) -> None:
    p, m = monitored
    ops = p.ops
    assert await run_checked(p, m, ops.register_queue("a", 2, b"{}")) == "ok"
    assert await run_checked(p, m, ops.register_queue("b", 2, b"{}")) == "ok"
    assert await run_checked(p, m, ops.register_queue("a", 2, b"{}")) == "ok"
    assert await run_checked(p, m, ops.register_queue("c", 2, b"{}")) == "full"


async def test_purge_deletes_finished_jobs_with_their_entries_and_nothing_else(
    monitored: tuple[Producer, Monitor],
) -> None:
    p, m = monitored
    ops = p.ops
    dead = await p._prepare(_req("t.noop", max_attempts=1))
    waiting = await p._prepare(_req("t.noop"))
    await run_checked(p, m, ops.submit(0, [dead]))
    (e1,) = await fetch(p, "w1")
    await run_checked(p, m, ops.start(0, "w1", [e1], minute()))
    err = b'{"type":"E","message":"boom"}'
    fail = [S.Write("f", dead.id, "default", 1, 1, err, "fail", 0)]
    assert await run_checked(p, m, ops.apply(0, fail, minute())) == ["failed"]
    await run_checked(p, m, ops.submit(0, [waiting]))
    gone = wire.new_job_id()
    jobs = [(dead.id, ""), (waiting.id, ""), (gone, "")]
    # finished before a time long past: nothing qualifies yet
    assert await run_checked(p, m, ops.purge(0, "default", jobs, 1)) == [
        "kept",
        "kept",
        "missing",
    ]
    assert await run_checked(p, m, ops.purge(0, "default", jobs)) == ["purged", "kept", "missing"]
    assert await run_checked(p, m, ops.purge(0, "default", jobs)) == [
        "missing",
        "kept",
        "missing",
    ]  # a re-sent call deletes nothing more
    assert not await p.redis.exists(p.keys.job(dead.id))
    assert await p.redis.zscore(p.keys.dead(0, "default"), dead.id) is None
    index = {f[b"j"].decode() for _, f in await p.redis.xrange(p.keys.index(0))}
    assert dead.id not in index and waiting.id in index
    assert (await p.get(waiting.id)).state == "queued"


def _req(task: str, **kw: Any) -> Any:
    from service.producer import SubmitRequest

    return SubmitRequest(task=task, payload={}, **kw)


def test_scripts_are_whole_or_nothing() -> None:
    for s in S.ALL:
        assert s.source.startswith("#!lua"), s.name  # refused up front when Redis is full


def _iter_fields() -> Iterator[str]:
    for src in _lua().values():
        yield from re.findall(r"put\(j, '(\w+)'", src)


def test_the_scripts_write_only_documented_job_fields() -> None:
    assert set(_iter_fields()) <= set(wire.JOB_FIELDS), set(_iter_fields()) - set(wire.JOB_FIELDS)


def test_the_dashboard_imports_the_state_machine_the_server_generates() -> None:
    """No hand-written copy in the dashboard: /static/contract.js is generated from states.py
    and every module that needs a state list imports it."""
    from service.core.states import CANCELLABLE, RETRYABLE, TERMINAL, contract_module

    static = resources.files("service").joinpath("static")
    assert not static.joinpath("contract.js").is_file()
    js = contract_module()
    for name in ("STATES", "TERMINAL", "EVENT_TYPES", "CANCELLABLE", "RETRYABLE"):
        assert f"export const {name} " in js
    for s in (*STATES, *TERMINAL, *CANCELLABLE, *RETRYABLE):
        assert f'"{s}"' in js
    for p in static.iterdir():
        if p.name.endswith(".js"):
            text = p.read_text()
            # a state list spelled out by hand is a copy
            assert '["queued", "scheduled"' not in text and "'queued','scheduled'" not in text, p


def test_the_progress_element_knows_every_job_event_and_finished_state() -> None:
    """<tidings-progress> is one dependency-free file people vendor, so it keeps its own copy of
    the event types it listens to and of the finished states: they must be the contract's."""
    from service.core.states import EVENT_TYPES, TERMINAL

    js = resources.files("service").joinpath("static", "tidings-progress.js").read_text()
    listed = re.search(r"const EVENT_TYPES = \[(.*?)\];", js, re.S)
    finished = re.search(r"const FINISHED = new Set\(\[(.*?)\]\);", js, re.S)
    assert listed is not None and finished is not None
    names = re.findall(r'"([a-z]+)"', listed.group(1))
    # every event a job's stream can carry ("stats" is the firehose's alone), in the same order
    assert names == [t for t in EVENT_TYPES if t != "stats"]
    assert set(re.findall(r'"([a-z]+)"', finished.group(1))) == set(TERMINAL)
