"""Which Redis errors are waited out (`service/core/retry.py`): the replies as redis-py's parser
turns them into exceptions (it strips the code: "MOVED 3999 h:p" is MovedError("3999 h:p")),
and a connection torn down under a command."""

from __future__ import annotations

import pytest
import redis.asyncio
from redis._parsers.base import BaseParser

from service.core.retry import is_transient

TRANSIENT = [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "LOADING Redis is loading the dataset in memory",
    "NOSCRIPT No matching script. Please use EVAL.",
    "READONLY You can't write against a read only replica.",
    "ASK 3999 127.0.0.1:6381",
    "MOVED 3999 127.0.0.1:6381",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "BUSY Redis is busy running a script.",
    "NOREPLICAS Not enough good replicas to write.",
    "UNBLOCKED force unblock from blocking operation",
    "ERR Script attempted to access a non local key in a cluster node script: x, on @user_script:2.",
    "ERR Attempted to access a non local key in a cluster node script: x, on @user_script:2.",
    "ERR Error running script (call to f_x): @user_script:1: -OOM command not allowed",
]
PERMANENT = [
    "ERR unknown command 'NOPE'",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "CROSSSLOT Keys in request don't hash to the same slot",
    "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    "NOPERM this user has no permissions to run the 'evalsha' command",
]


def parsed(reply: str) -> Exception:
    """The exception redis-py raises for this error reply."""
    exc: Exception = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    return exc


@pytest.mark.parametrize("reply", TRANSIENT)
def test_transient_replies(reply: str) -> None:
    assert is_transient(parsed(reply))


@pytest.mark.parametrize("reply", PERMANENT)
def test_permanent_replies(reply: str) -> None:
    assert not is_transient(parsed(reply))


async def test_connection_closed_under_a_command_is_transient() -> None:
    # what redis-py 8.1 raises when another task closed the connection mid-command
    client = redis.asyncio.Redis(port=1)
    conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    conn._writer = None
    with pytest.raises(AttributeError) as info:
        await conn._send_packed_command([b"PING"])
    assert is_transient(info.value)
    await client.aclose()


def test_the_same_error_in_our_own_code_is_a_bug() -> None:
    with pytest.raises(AttributeError) as info:
        None.writelines  # type: ignore[attr-defined]  # noqa: B018
    assert not is_transient(info.value)
