"""The readers' shared slots (workers/fetch.py `Slots`): no reader starves, nothing leaks."""

from __future__ import annotations

import asyncio
from collections import Counter

from workers.fetch import Slots


async def test_every_reader_gets_turns_when_slots_are_fewer_than_reads() -> None:
    # 16 partitions, concurrency 24: 2 slots per read, so only 12 reads fit at once
    slots = Slots(24, 16)
    stop = asyncio.Event()
    reads: Counter[int] = Counter()

    async def reader(k: int) -> None:
        while not stop.is_set():
            n = await slots.take(stop, 1.0)
            if n <= 0:
                continue
            reads[k] += 1
            try:
                await asyncio.sleep(0.01)  # a blocking read that brought nothing
            finally:
                slots.give_back(n)

    tasks = [asyncio.create_task(reader(k)) for k in range(16)]
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    assert len(reads) == 16
    # served in turn: the least-served reader is within a couple of turns of the most-served
    assert max(reads.values()) - min(reads.values()) <= 2, reads
    assert slots.used == 0


async def test_a_waiting_reader_cancelled_leaks_no_slot() -> None:
    slots = Slots(1, 2)
    stop = asyncio.Event()
    assert await slots.take(stop, 1.0) == 1
    waiter = asyncio.create_task(slots.take(stop, 5.0))
    await asyncio.sleep(0.01)
    slots.give_back(1)  # granted to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    try:
        got = await waiter
    except asyncio.CancelledError:
        got = 0
    slots.give_back(got)
    assert slots.used == 0
    assert await slots.take(stop, 0.1) == 1


async def test_take_times_out_with_nothing() -> None:
    slots = Slots(1, 1)
    stop = asyncio.Event()
    assert await slots.take(stop, 1.0) == 1
    assert await slots.take(stop, 0.05) == 0
    assert slots.used == 1
