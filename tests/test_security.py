"""Keys, watch tokens, sessions, CORS, limits and hostile input, against the app in-process on a
real Redis: every bad request gets a 4xx JSON error, changes nothing, and the service lives."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.config import Config
from service.http import state as http_state
from service.http.app import create_app
from service.http.auth import Auth
from service.producer import Producer
from tests.conftest import make_config, task_registry

KEY, OTHER_KEY = "k-" + "a" * 30, "k-" + "b" * 30
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def secured(redis_url: str, prefix: str, tmp: str, **env: str) -> Config:
    return make_config(
        redis_url,
        prefix,
        TIDINGS_WORKERS_TASKS="tests.tasks",
        TIDINGS_AUTH_API_KEYS=f"{KEY},{OTHER_KEY}",
        TIDINGS_REDIS_EMBEDDED_DIR=tmp,
        **env,
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Any) -> Client:
    return await aiohttp_client(
        create_app(secured(redis_url, prefix, str(tmp_path)), redis_url, task_registry())
    )


AUTH = {"Authorization": f"Bearer {KEY}"}


async def nothing_enqueued(c: Client) -> None:
    async with c.get("/api/jobs", headers=AUTH) as r:
        assert r.status == 200
        assert (await r.json())["jobs"] == []
    async with c.get("/healthz") as r:
        assert r.status == 200


async def submit(c: Client, **body: Any) -> dict[str, Any]:
    async with c.post(
        "/api/jobs", json={"task": "t.noop", "payload": {}, **body}, headers=AUTH
    ) as r:
        assert r.status in (200, 201), await r.text()
        out: dict[str, Any] = await r.json()
        return out


async def test_keys_required_and_checked(client: Client) -> None:
    async with client.get("/api/queues") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert (await r.json())["error"]["code"] == "unauthorized"
    async with client.get("/api/queues", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 403
    async with client.get("/api/queues", headers={"Authorization": f"Basic {KEY}"}) as r:
        assert r.status == 401
    for key in (KEY, OTHER_KEY):  # two keys at once, for rotation
        async with client.get("/api/queues", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
    async with client.get("/healthz") as r:
        assert r.status == 200
    # the operator's endpoints too: acting on many jobs, the trend, the live figures
    for method, path in [
        ("POST", "/api/jobs/bulk"),
        ("POST", "/api/queues/default/dead/retry"),
        ("POST", "/api/queues/default/dead/purge"),
        ("POST", "/api/queues/default/purge"),
        ("POST", "/api/queues/default/pause"),
        ("GET", "/api/stats/trend"),
        ("GET", "/api/events?stats=only"),
    ]:
        async with client.request(method, path) as r:
            assert r.status == 401, (method, path)


async def test_watch_token_opens_one_job_read_only(client: Client) -> None:
    a = await submit(client)
    b = await submit(client)
    events_url, status_url = a["events_url"], a["status_url"]
    assert "token=" in events_url and KEY not in events_url
    token = events_url.split("token=")[1]
    path = events_url.split(str(client.server.make_url("")))[1]
    await client.post(f"/api/jobs/{a['id']}/cancel", headers=AUTH)  # terminal: the stream ends
    async with client.get(path) as r:
        assert r.status == 200
        body = await r.text()
        assert "event: cancelled" in body
    async with client.get(status_url.split(str(client.server.make_url("")))[1]) as r:
        assert r.status == 200 and (await r.json())["id"] == a["id"]
    # the same token on another job, another endpoint, or a write: refused
    for method, p in [
        ("GET", f"/api/jobs/{b['id']}/events?token={token}"),
        ("GET", f"/api/jobs/{b['id']}?token={token}"),
        ("GET", f"/api/jobs?token={token}"),
        ("POST", f"/api/jobs/{a['id']}/cancel?token={token}"),
        ("GET", f"/api/queues?token={token}"),
    ]:
        async with client.request(method, p) as r:
            assert r.status == 403, (method, p)
    # tampered and expired tokens
    exp, mac = token.split(".")
    tampered = exp + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    async with client.get(f"/api/jobs/{a['id']}/events?token={tampered}") as r:
        assert r.status == 403
    signing = (client.app[http_state.AUTH])._signing
    old = Auth([KEY], signing, token_ttl_s=1).watch_token(a["id"], now=1.0)
    async with client.get(f"/api/jobs/{a['id']}/events?token={old}") as r:
        assert r.status == 401 and "expired" in (await r.json())["error"]["message"]


async def test_dashboard_session_cookie(client: Client) -> None:
    async with client.get("/api/session") as r:
        assert await r.json() == {"auth": True, "signed_in": False}
    async with client.post("/api/session", json={"key": "wrong"}) as r:
        assert r.status == 403
    async with client.post("/api/session", json={"key": KEY}) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    async with client.get("/api/queues") as r:  # the cookie jar now carries the session
        assert r.status == 200
    async with client.delete("/api/session") as r:
        assert r.status == 200
    async with client.get("/api/queues") as r:
        assert r.status == 401


async def test_cors_off_by_default_and_allowlist(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    plain = await aiohttp_client(
        create_app(secured(redis_url, prefix, str(tmp_path)), redis_url, task_registry())
    )
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with plain.options("/api/jobs", headers=pre) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    cfg = secured(redis_url, prefix, str(tmp_path), TIDINGS_HTTP_CORS_ORIGINS="https://app.example")
    c = await aiohttp_client(create_app(cfg, redis_url, task_registry()))
    ok = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    async with c.options("/api/jobs/x/events", headers=ok) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Last-Event-ID" in r.headers["Access-Control-Allow-Headers"]
    async with c.get("/api/queues", headers={**AUTH, "Origin": "https://app.example"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    async with c.get("/api/queues", headers={**AUTH, "Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_submit_rate_and_queue_caps(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    cfg = secured(
        redis_url,
        prefix,
        str(tmp_path),
        TIDINGS_AUTH_SUBMIT_RATE="1000",
        TIDINGS_JOBS_MAX_QUEUED="3",
    )
    c = await aiohttp_client(create_app(cfg, redis_url, task_registry()))
    for _ in range(3):
        await submit(c)
    async with c.post("/api/jobs", json={"task": "t.noop", "payload": {}}, headers=AUTH) as r:
        assert r.status == 429 and r.headers["Retry-After"]
    cfg = secured(redis_url, prefix + "r", str(tmp_path), TIDINGS_AUTH_SUBMIT_RATE="2")
    c = await aiohttp_client(create_app(cfg, redis_url, task_registry()))
    statuses = []
    for _ in range(6):
        async with c.post("/api/jobs", json={"task": "t.noop", "payload": {}}, headers=AUTH) as r:
            statuses.append(r.status)
    assert statuses.count(429) >= 2 and 201 in statuses  # at most 2 per second per key


async def test_sse_connection_caps(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    cfg = secured(redis_url, prefix, str(tmp_path), TIDINGS_SSE_MAX_PER_CLIENT="1")
    c = await aiohttp_client(create_app(cfg, redis_url, task_registry()))
    job = await submit(c)
    first = await c.get(f"/api/jobs/{job['id']}/events", headers=AUTH)
    assert first.status == 200
    await first.content.readline()  # the stream is open
    async with c.get(f"/api/jobs/{job['id']}/events", headers=AUTH) as r:
        assert r.status == 503 and r.headers["Retry-After"]
    async with c.get(
        f"/api/jobs/{job['id']}/events", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    ) as r:
        assert r.status == 200  # another key has its own budget
    first.close()


HOSTILE: list[tuple[str, str, dict[str, str], bytes | None, int]] = [
    # (method, path, headers, body, expected status)
    ("POST", "/api/jobs", {"Authorization": ""}, b'{"task":"t.noop","payload":{}}', 401),
    ("POST", "/api/jobs", {"Authorization": "Bearer x"}, b'{"task":"t.noop","payload":{}}', 403),
    ("POST", "/api/jobs", {"Content-Type": "text/plain"}, b'{"task":"t.noop","payload":{}}', 415),
    (
        "POST",
        "/api/jobs",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"task=t.noop",
        415,
    ),
    ("POST", "/api/jobs", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--", 415),
    ("POST", "/api/jobs", {}, b"", 400),
    ("POST", "/api/jobs", {}, b"{", 400),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":NaN}', 400),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":Infinity}', 400),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{"x":1e999}}', 422),
    (
        "POST",
        "/api/jobs",
        {},
        b'{"task":"t.steps","payload":{"n":123456789012345678901234567890}}',
        422,
    ),
    (
        "POST",
        "/api/jobs",
        {},
        b'{"task":"t.noop","payload":' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
    ),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":"' + b"x" * (2 << 20) + b'"}', 413),
    ("POST", "/api/jobs", {}, b"[1,2,3]", 422),
    ("POST", "/api/jobs", {}, b'"just a string"', 422),
    ("POST", "/api/jobs", {}, b'{"payload":{}}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"admin":true}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"../../etc/passwd","payload":{}}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"queue":"a b"}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"queue":"' + b"q" * 200 + b'"}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"queue":"{x}"}', 422),
    (
        "POST",
        "/api/jobs",
        {},
        b'{"task":"t.noop","payload":{},"idempotency_key":"' + b"k" * 500 + b'"}',
        422,
    ),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"idempotency_key":"a\\u0000b"}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"delay_s":1e308}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"max_attempts":0}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"max_attempts":99999999999}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{},"timeout_s":-5}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.steps","payload":{"n":"3"}}', 422),
    ("POST", "/api/jobs", {}, b'{"task":"t.noop","payload":{}}\xff', 400),
    ("GET", "/api/jobs/..%2F..%2Fetc/events", {}, None, 404),
    ("GET", "/api/jobs/" + "a" * 5000, {}, None, 404),
    ("GET", "/api/jobs/ZZZZZZZZZZZZZZZZZZZZZZZZZZ/events", {}, None, 404),
    ("GET", "/api/jobs?limit=-1", {}, None, 422),
    ("GET", "/api/jobs?limit=abc", {}, None, 422),
    ("GET", "/api/jobs?state=exploded", {}, None, 422),
    ("GET", "/api/jobs?cursor=zzz", {}, None, 422),
    ("GET", "/api/events?queue=a%20b", {}, None, 422),
    ("GET", "/api/queues/a%20b/dead", {}, None, 422),
    ("POST", "/api/jobs/bulk", {}, b'{"action":"cancel","ids":["../x"]}', 422),
    ("POST", "/api/jobs/bulk", {}, b'{"action":"drop","ids":[]}', 422),
    (
        "POST",
        "/api/jobs/bulk",
        {},
        b'{"action":"retry","ids":[' + b",".join([b'"00000000000000000000000000"'] * 1001) + b"]}",
        422,
    ),
    ("POST", "/api/jobs/bulk?dry_run=x", {}, b'{"action":"retry","ids":[]}', 422),
    ("POST", "/api/queues/a%20b/dead/retry", {}, None, 422),
    ("POST", "/api/queues/nosuch/dead/purge", {}, None, 404),
    ("POST", "/api/queues/nosuch/purge", {}, b'{"finished_before":1}', 404),
    ("GET", "/api/stats/trend?minutes=-1", {}, None, 422),
    ("GET", "/api/stats/trend?task=a%7Cb", {}, None, 422),
    ("GET", "/api/events?stats=2", {}, None, 422),
    ("POST", "/api/jobs/00000000000000000000000000/cancel", {}, None, 404),
    ("POST", "/api/jobs/00000000000000000000000000/retry", {}, None, 404),
    ("DELETE", "/api/jobs", {}, None, 405),
    ("PUT", "/api/jobs", {}, b"{}", 405),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), HOSTILE)
async def test_hostile_requests(
    client: Client, method: str, path: str, headers: dict[str, str], body: bytes | None, status: int
) -> None:
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers}
    h = {k: v for k, v in h.items() if v}
    data = io.BytesIO(body) if body is not None and len(body) > 1 << 16 else body
    async with client.request(method, path, headers=h, data=data) as r:
        assert r.status == status, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        err = (await r.json())["error"]
        assert err["code"] and err["message"] and "Traceback" not in err["message"]
    await nothing_enqueued(client)


async def test_no_5xx_for_random_bodies_and_last_event_ids(
    client: Client, cfg: Config, redis_url: str
) -> None:
    done = await submit(client)
    await client.post(f"/api/jobs/{done['id']}/cancel", headers=AUTH)
    loop = asyncio.get_running_loop()

    async def probe(body: bytes, last_id: str) -> list[int]:
        out = []
        async with client.post(
            "/api/jobs", data=body, headers={**AUTH, "Content-Type": "application/json"}
        ) as r:
            out.append(r.status)
        async with client.get(
            f"/api/jobs/{done['id']}/events", headers={**AUTH, "Last-Event-ID": last_id}
        ) as r:
            await r.read()
            out.append(r.status)
        async with client.get(
            f"/api/jobs/{done['id']}/events?last_event_id={last_id}", headers=AUTH
        ) as r:
            await r.read()
            out.append(r.status)
        return out

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    bodies = st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"task": st.sampled_from(["t.noop", "t.steps", "x"]), "payload": json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
    header_text = st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
    ) | st.from_regex(r"\A[0-9]{1,22}-[0-9]{1,22}\Z")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, last_id=header_text)
    def check(body: bytes, last_id: str) -> None:
        statuses = asyncio.run_coroutine_threadsafe(probe(body, last_id.strip()), loop).result(30)
        assert all(s < 500 for s in statuses), (body, last_id, statuses)

    await asyncio.to_thread(check)
    async with client.get("/healthz") as r:
        assert r.status == 200


async def test_refuses_public_bind_without_keys(tmp_path: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        os.sys.executable,  # type: ignore[attr-defined]
        "-m",
        "service",
        env={**os.environ, "TIDINGS_CONFIG": os.devnull, "TIDINGS_HTTP_HOST": "0.0.0.0"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"http.host" in err and b"auth.api_keys" in err


async def test_workers_dead_letter_malformed_payloads(producer: Producer) -> None:
    # a payload that no longer fits the task's type (written by an old producer, say) fails the
    # job with a clear error instead of crash-looping the worker; covered end to end in
    # test_faults; here: the producer refuses it up front
    with pytest.raises(Exception, match="Expected `int`"):
        await producer.submit("t.steps", {"n": "many"})
    assert (await producer.queues()) == {}
