"""Metrics an operator can trust: exact job counts and histograms in a scrape, a lag gauge that
follows the workers, each worker process's own figures, and a real Prometheus (Debian's
`prometheus`) that scrapes all of it and answers the same through PromQL, evaluates the alert
rules, and runs every panel of the Grafana dashboard. The alert rules' own unit tests run with
`promtool`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from service.core import scripts as S
from service.http.app import create_app
from service.http.metrics import METHODS, Snapshot, system_families
from service.producer import Producer, SubmitRequest
from tests.conftest import make_config, task_registry
from tests.helpers import ROOT, Stack, eventually

DOCS = ROOT / "docs"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
JOB_ID = re.compile(r"^[0-9a-z]{26}$")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- reading /metrics ------------------------------------------------------------------------


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= lbls)


def has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await r.text())


def free_port_pair() -> int:
    """A port p with p and p + 1 both free (two worker processes' metrics ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two consecutive free ports")


# -- a real Prometheus -------------------------------------------------------------------------


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    async def get(self, http: aiohttp.ClientSession, path: str, **params: str) -> Any:
        async with http.get(self.base + path, params=params) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, http: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        data = await self.get(http, "/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def by(self, http: aiohttp.ClientSession, expr: str, *labels: str) -> dict[Any, float]:
        """An instant vector as {label values: value}."""
        out = {}
        for row in await self.query(http, expr):
            key = tuple(row["metric"].get(lbl, "") for lbl in labels)
            out[key[0] if len(key) == 1 else key] = float(row["value"][1])
        return out


@asynccontextmanager
async def prometheus(tmp: Path, service: str, workers: list[str]) -> AsyncIterator[Prometheus]:
    """Prometheus on a free port, scraping the service and the worker processes every second and
    evaluating docs/alerts.yml; stopped (by its pid) at the end."""
    assert PROMETHEUS is not None
    port = free_port_pair()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DOCS / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "tidings", "static_configs": [{"targets": [service]}]},
            {"job_name": "tidings-workers", "static_configs": [{"targets": workers}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    proc = _spawn(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        tmp / "prometheus.log",
    )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert proc.poll() is None, (tmp / "prometheus.log").read_text()
                try:
                    async with http.get(prom.base + "/-/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=30, what="prometheus ready")
        yield prom
    finally:
        _stop(proc)


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Our process, by its group: SIGTERM, then SIGKILL after 20 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- the dashboard's queries -------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of docs/grafana-dashboard.json, with the dashboard's
    variables as Grafana would fill them for "all queues"."""
    dash = json.loads((DOCS / "grafana-dashboard.json").read_text())
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$queue", ".*")
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    assert out
    return out


def names_in(expr: str) -> set[str]:
    """Metric names an expression reads (ours and the process collector's)."""
    found = set(re.findall(r"\b((?:tidings|process)_[a-z_]+)", expr))
    # a histogram's series names, as its family
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in found}


# -- the scenario ------------------------------------------------------------------------------


async def submit(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> str:
    async with http.post(base + "/api/jobs", json=body) as r:
        assert r.status == 201, await r.text()
        job_id: str = (await r.json())["id"]
        return job_id


async def state_of(http: aiohttp.ClientSession, base: str, job_id: str) -> str:
    async with http.get(f"{base}/api/jobs/{job_id}") as r:
        state: str = (await r.json())["state"]
        return state


async def all_finished(http: aiohttp.ClientSession, base: str, ids: list[str]) -> None:
    async def done() -> bool:
        states = [await state_of(http, base, j) for j in ids]
        return all(s in ("succeeded", "failed", "cancelled") for s in states)

    await eventually(done, timeout=30, what="all jobs finished")


def stop_workers(st: Stack) -> None:
    """SIGTERM to the worker supervisors we started (their process groups), and wait."""
    for p in st.workers:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in st.workers:
        p.wait(30)


# outcomes of the scenario below: exact, per task
SUBMITTED = {"t.noop": 6, "t.fail": 4, "t.sleep": 1}
FINISHED = {
    ("t.noop", "succeeded"): 6,
    ("t.fail", "succeeded"): 2,
    ("t.fail", "failed"): 2,
    ("t.sleep", "cancelled"): 1,
}
# attempts that ran to an end: noop 6; fail: 2 x (error, success) + 2 x (error, error); sleep 1
ATTEMPTS = {"t.noop": 6, "t.fail": 8, "t.sleep": 1}


@pytest.mark.e2e
@pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus package")
async def test_a_scrape_and_prometheus_tell_exactly_what_happened(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    wport = free_port_pair()
    st = stack_factory(
        redis_url, TIDINGS_JOBS_BACKOFF_BASE_S="0", TIDINGS_WORKERS_METRICS_PORT=str(wport)
    )
    await st.start_service()
    worker_urls = [f"http://127.0.0.1:{wport + i}/metrics" for i in range(2)]
    async with (
        prometheus(
            tmp_path, f"127.0.0.1:{st.port}", [f"127.0.0.1:{wport}", f"127.0.0.1:{wport + 1}"]
        ) as prom,
        aiohttp.ClientSession() as http,
    ):
        await st.start_workers(2)
        base, metrics = st.http, st.http + "/metrics"
        # -- N jobs: some retried, some dead-lettered, one cancelled while it runs
        ids = [await submit(http, base, {"task": "t.noop", "payload": {}}) for _ in range(6)]
        ids += [
            await submit(http, base, {"task": "t.fail", "payload": {"succeed_on": 2}})
            for _ in range(2)
        ]
        ids += [
            await submit(http, base, {"task": "t.fail", "payload": {}, "max_attempts": 2})
            for _ in range(2)
        ]
        sleeper = await submit(http, base, {"task": "t.sleep", "payload": {"seconds": 60}})

        async def running() -> bool:
            return await state_of(http, base, sleeper) == "running"

        await eventually(running, what="the sleeper running")
        async with http.post(f"{base}/api/jobs/{sleeper}/cancel") as r:
            assert r.status == 202
        await all_finished(http, base, [*ids, sleeper])

        # -- one scrape: exact counts
        m = await scrape(http, metrics)
        for task, n in SUBMITTED.items():
            assert value(m, "tidings_jobs_submitted_total", queue="default", task=task) == n
        for outcome in ("succeeded", "failed", "cancelled"):
            for task in SUBMITTED:
                got = value(m, "tidings_jobs_finished_total", task=task, outcome=outcome)
                assert got == FINISHED.get((task, outcome), 0), (task, outcome)
        assert value(m, "tidings_jobs_retried_total", task="t.fail") == 4
        assert value(m, "tidings_jobs_dead_lettered_total", task="t.fail") == 2
        assert value(m, "tidings_jobs_retried_total") == 4  # none of the others
        assert value(m, "tidings_jobs_requeued_total") == 0
        # histograms: one observation per attempt that ended, buckets cumulative up to +Inf
        for hist in ("tidings_job_wait_seconds", "tidings_job_run_seconds"):
            for task, n in ATTEMPTS.items():
                assert value(m, hist + "_count", task=task) == n, (hist, task)
                assert value(m, hist + "_bucket", task=task, le="+Inf") == n
                buckets = sorted(
                    (float(dict(lbls)["le"]), v)
                    for (name, lbls), v in m.items()
                    if name == hist + "_bucket" and dict(lbls)["task"] == task
                )
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), (hist, task, buckets)
        # the sleeper ran until cancelled: its run time is in its sum and above the 5 ms bucket
        assert value(m, "tidings_job_run_seconds_sum", task="t.sleep") > 0.005
        assert value(m, "tidings_job_run_seconds_bucket", task="t.sleep", le="0.005") == 0
        assert value(m, "tidings_queue_jobs", queue="default", state="dead") == 2
        for state in ("queued", "running", "scheduled"):
            assert value(m, "tidings_queue_jobs", queue="default", state=state) == 0
        assert value(m, "tidings_queue_oldest_age_seconds", queue="default") == 0
        assert value(m, "tidings_workers", queue="default") == 2
        assert value(m, "tidings_redis_up") == 1
        posts = value(
            m, "tidings_http_requests_total", route="/api/jobs", method="POST", status="201"
        )
        assert posts == 11

        # -- each worker process's own figures, on metrics_port + its index
        per_worker = [await scrape(http, u) for u in worker_urls]
        both = {k: sum(w.get(k, 0.0) for w in per_worker) for w in per_worker for k in w}
        assert value(both, "tidings_worker_attempts_total", task="t.noop", outcome="succeeded") == 6
        assert value(both, "tidings_worker_attempts_total", task="t.fail", outcome="error") == 6
        assert value(both, "tidings_worker_attempts_total", task="t.fail", outcome="succeeded") == 2
        assert (
            value(both, "tidings_worker_attempts_total", task="t.sleep", outcome="cancelled") == 1
        )
        for w in per_worker:
            assert value(w, "tidings_worker_jobs_running") == 0
            assert value(w, "tidings_worker_concurrency") > 0
            assert value(w, "process_cpu_seconds_total") > 0
            assert value(w, "tidings_worker_event_loop_lag_seconds_count") > 0
            assert has(w, "tidings_worker_info")
        assert (
            len(
                {
                    dict(lbls)["worker"]
                    for w in per_worker
                    for (n, lbls) in w
                    if n == "tidings_worker_info"
                }
            )
            == 2
        )

        # -- the lag: rises while no worker runs, falls when they are back
        stop_workers(st)
        m = await scrape(http, metrics)
        assert value(m, "tidings_workers", queue="default") == 0
        late = [await submit(http, base, {"task": "t.noop", "payload": {}}) for _ in range(3)]

        async def lag() -> float:
            return value(await scrape(http, metrics), "tidings_queue_oldest_age_seconds")

        first = await lag()
        m = await scrape(http, metrics)
        assert value(m, "tidings_queue_jobs", queue="default", state="queued") == 3

        async def risen() -> float:
            return max(0.0, await lag() - first - 1.5)

        await eventually(risen, timeout=10, what="the lag rising")

        # Prometheus sees it too, and the no-workers alert goes pending for this queue
        async def no_workers_alert() -> bool:
            alerts = (await prom.get(http, "/api/v1/alerts"))["alerts"]
            return any(
                a["labels"]["alertname"] == "TidingsNoLiveWorkers"
                and a["labels"]["queue"] == "default"
                for a in alerts
            )

        await eventually(no_workers_alert, timeout=15, what="TidingsNoLiveWorkers pending")
        lag_q = 'tidings_queue_oldest_age_seconds{queue="default"}'

        async def prometheus_saw_the_lag() -> bool:
            # Prometheus scrapes once a second: wait until one of its own samples holds the
            # risen lag, or the peak asserted below depends on where the last scrape fell
            return (await prom.by(http, lag_q, "queue")).get("default", 0.0) >= 1.5

        await eventually(prometheus_saw_the_lag, timeout=15, what="prometheus seeing the lag")
        before_return = await lag()
        assert before_return >= first + 1.5
        await st.start_workers(2)
        await all_finished(http, base, late)
        m = await scrape(http, metrics)
        assert value(m, "tidings_queue_oldest_age_seconds", queue="default") == 0
        assert value(m, "tidings_queue_jobs", queue="default", state="queued") == 0
        assert value(m, "tidings_jobs_finished_total", task="t.noop", outcome="succeeded") == 9
        assert value(m, "tidings_job_wait_seconds_count", task="t.noop") == 9
        # the three late ones waited over a second: above the 1 s bucket
        over_1s = value(m, "tidings_job_wait_seconds_bucket", task="t.noop", le="+Inf") - value(
            m, "tidings_job_wait_seconds_bucket", task="t.noop", le="1.0"
        )
        assert over_1s >= 3

        # -- a real Prometheus answers the same through PromQL (once it has scraped the end)
        want = {k: float(v) for k, v in FINISHED.items()} | {("t.noop", "succeeded"): 9.0}
        finished_q = "sum by (task, outcome) (tidings_jobs_finished_total) > 0"

        # the restarted worker processes, each scraped twice (what a rate() needs)
        fresh_workers = (
            "count((count_over_time(tidings_worker_info[1m]) >= 2) and tidings_worker_info)"
        )

        async def prometheus_agrees() -> bool:
            return (
                await prom.by(http, fresh_workers) == {(): 2}
                and await prom.by(http, finished_q, "task", "outcome") == want
                and await prom.by(http, 'tidings_workers{queue="default"}', "queue")
                == {"default": 2}
                and await prom.by(http, lag_q, "queue") == {"default": 0}
            )

        await eventually(prometheus_agrees, timeout=20, what="prometheus's view of the end")
        series = await prom.by(http, "sum by (task) (tidings_jobs_submitted_total)", "task")
        assert series == {"t.noop": 9, "t.fail": 4, "t.sleep": 1}
        series = await prom.by(http, "sum by (task) (tidings_job_run_seconds_count)", "task")
        assert series == {"t.noop": 9, "t.fail": 8, "t.sleep": 1}
        series = await prom.by(http, "sum(tidings_jobs_dead_lettered_total)")
        assert series == {(): 2}
        peak = await prom.by(http, f"max_over_time({lag_q}[10m])", "queue")
        assert peak["default"] >= 1.5
        wait_p99 = await prom.by(
            http,
            'histogram_quantile(0.99, sum by (le) (tidings_job_wait_seconds_bucket{task="t.noop"}))',
        )
        assert wait_p99[()] > 1.0
        up = await prom.by(http, 'up{job="tidings-workers"}', "instance")
        assert sorted(up.values()) == [1.0, 1.0]

        # -- the alert rules load and evaluate without error against the real metrics
        groups = (await prom.get(http, "/api/v1/rules"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 8
        for rule in rules:
            assert rule["health"] == "ok", rule

        # -- every panel of the dashboard runs; the key ones return data
        known = set(await prom.get(http, "/api/v1/label/__name__/values"))
        known |= {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in known}
        empty = []
        for title, expr in dashboard_queries():
            for name in names_in(expr):
                assert name in known, f"{title}: {name} is not a metric Prometheus has"
            if not await prom.query(http, expr):
                empty.append(title)
        # nothing was cut and no gap happened here; all else has data
        assert set(empty) <= {"SSE cuts and refusals", "Hub lag"}, empty
        for title, expr in dashboard_queries():
            if "histogram_quantile" in expr and title.startswith(("Wait", "Run")):
                assert await prom.query(http, expr), title


async def test_batched_transitions_count_exactly(producer: Producer) -> None:
    """The scripts add the counters up per call: one call mixing queues, tasks and outcomes
    still counts each (queue, task) exactly, as a worker's batches do under load."""
    p, r = producer, producer.redis
    combos = [("qa", "t.noop"), ("qa", "t.steps"), ("qb", "t.noop")]
    reqs = [
        SubmitRequest(task=t, payload={}, queue=q, max_attempts=2)
        for i in range(60)
        for q, t in [combos[i % 3]]
    ]
    jobs = await p.submit_many(reqs)
    # start every job in one call per partition, as a worker's fetcher would
    entries = []
    for q in ("qa", "qb"):
        stream = p.keys.queue(0, q)
        await r.xgroup_create(stream, S.GROUP, id="0", mkstream=True)
        for _, rows in await r.xreadgroup(S.GROUP, "w1", {stream: ">"}, count=1000):
            entries += [S.Entry(f[b"j"].decode(), q, eid.decode()) for eid, f in rows]
    minute = int(time.time() // 60)  # one trend hash for both calls
    started = await p.ops.start(0, "w1", entries, minute).run(r)
    assert [row.verdict for row in started] == ["run"] * 60
    # one apply call: succeeded, error (retried: attempts left), fail (dead), cancelled
    outcomes = ["succeeded", "error", "fail", "cancelled"]
    writes = [
        S.Write("f", row.id, e.queue, row.run, 1, b'{"type":"X","message":"x"}', outcomes[i % 4], 0)
        for i, (row, e) in enumerate(zip(started, entries, strict=True))
    ]
    await p.ops.apply(0, writes, minute).run(r)
    fams, _ = await system_families(r, p.keys, p.queries)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Snapshot(fams))
    m = parse(generate_latest(reg).decode())
    queue_of = {j.id: j.queue for j in jobs}
    task_of = {j.id: j.task for j in jobs}
    expect: dict[tuple[str, str, str], int] = {}
    for i, w in enumerate(writes):
        key = (queue_of[w.id], task_of[w.id], outcomes[i % 4])
        expect[key] = expect.get(key, 0) + 1
    for q, t in combos:
        assert value(m, "tidings_jobs_submitted_total", queue=q, task=t) == 20
        assert value(m, "tidings_job_wait_seconds_count", queue=q, task=t) == 20
        assert value(m, "tidings_job_run_seconds_count", queue=q, task=t) == 20
        fin = {
            o: value(m, "tidings_jobs_finished_total", queue=q, task=t, outcome=o)
            for o in ("succeeded", "failed", "cancelled")
        }
        assert fin == {
            "succeeded": expect.get((q, t, "succeeded"), 0),
            "failed": expect.get((q, t, "fail"), 0),
            "cancelled": expect.get((q, t, "cancelled"), 0),
        }, (q, t)
        assert value(m, "tidings_jobs_retried_total", queue=q, task=t) == expect.get(
            (q, t, "error"), 0
        )
        assert value(m, "tidings_jobs_dead_lettered_total", queue=q, task=t) == fin["failed"]
    # and the per-minute trend (the dashboard's) holds the same outcomes, with an expiry
    trend = p.keys.trend(0, minute)
    assert 0 < await r.pttl(trend) <= 7_200_000
    fields = {k.decode(): int(v) for k, v in (await r.hgetall(trend)).items()}
    assert sum(v for k, v in fields.items() if k.startswith("o|")) == 45  # all but the retried
    assert sum(v for k, v in fields.items() if k.startswith("w|")) == 60
    assert sum(v for k, v in fields.items() if k.startswith("r|")) == 60


async def test_labels_are_bounded_and_names_follow_conventions(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    """No job id in any label (not even from a 404 on a job URL), methods from a fixed set,
    counters end in _total, times in seconds."""
    cfg = make_config(redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks")
    client = await aiohttp_client(create_app(cfg, redis_url, task_registry()))
    r = await client.post("/api/jobs", json={"task": "t.noop", "payload": {}})
    job_id = (await r.json())["id"]
    await client.get(f"/api/jobs/{job_id}")
    await client.get("/api/jobs/01m8hn65jcv7pb563at43ag2zx")
    await client.get(f"/nothing/here/{job_id}")
    for method in ("PROPFIND", "QUERY", "PURGE"):
        await client.request(method, "/api/jobs")
    r = await client.get("/metrics")
    text = await r.text()
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    for want in (
        "tidings_jobs_submitted",
        "tidings_jobs_finished",
        "tidings_jobs_retried",
        "tidings_jobs_dead_lettered",
        "tidings_job_wait_seconds",
        "tidings_job_run_seconds",
        "tidings_queue_jobs",
        "tidings_queue_oldest_age_seconds",
        "tidings_workers",
        "tidings_sse_watchers",
        "tidings_sse_cuts",
        "tidings_hub_lag_events",
        "tidings_http_requests",
        "tidings_http_request_duration_seconds",
    ):
        assert want in names, want
    for fam in families:
        assert fam.name.startswith("tidings_"), fam.name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name
        for s in fam.samples:
            for label, v in s.labels.items():
                assert not JOB_ID.match(v), (s.name, label, v)
                assert job_id not in v, (s.name, label, v)
            if "method" in s.labels:
                assert s.labels["method"] in METHODS | {"other"}, s
            if "route" in s.labels:
                assert s.labels["route"].startswith("/") or s.labels["route"] == "unmatched"
    m = parse(text)
    assert value(m, "tidings_http_requests_total", method="other") == 3
    assert value(m, "tidings_http_requests_total", route="/api/jobs/{id}", status="200") == 1
    assert value(m, "tidings_http_requests_total", route="/api/jobs/{id}", status="404") == 1
    # a queue and task seen get every counter, at 0 until it moves (rate() sees the first one)
    for outcome in ("succeeded", "failed", "cancelled"):
        assert (
            "tidings_jobs_finished_total",
            frozenset({("queue", "default"), ("task", "t.noop"), ("outcome", outcome)}),
        ) in m
    assert value(m, "tidings_jobs_dead_lettered_total", task="t.noop") == 0


async def test_without_redis_the_process_figures_still_come(
    aiohttp_client: AiohttpClient, prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens there
    cfg = make_config(dead, prefix, TIDINGS_REDIS_SOCKET_TIMEOUT_S="3")
    client = await aiohttp_client(create_app(cfg, dead, task_registry()))
    r = await client.get("/metrics")
    assert r.status == 200
    m = parse(await r.text())
    assert value(m, "tidings_redis_up") == 0
    assert has(m, "tidings_sse_watchers")
    assert not has(m, "tidings_jobs_finished_total")


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian's prometheus package)")
def test_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"], cwd=DOCS, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=DOCS, capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = set(re.findall(r"- alert: (\w+)", (DOCS / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (DOCS / "alerts.test.yml").read_text()))
    assert rules and rules == tested, rules ^ tested


def test_dashboard_is_well_formed() -> None:
    dash = json.loads((DOCS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
    text = json.dumps(dash)
    # the questions of README's "Metrics": lag, throughput by outcome, percentiles, workers,
    # watchers
    for name in (
        "tidings_queue_oldest_age_seconds",
        "tidings_jobs_finished_total",
        "tidings_job_wait_seconds_bucket",
        "tidings_job_run_seconds_bucket",
        "tidings_workers",
        "tidings_sse_watchers",
    ):
        assert name in text, name
