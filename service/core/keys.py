"""Every Redis key name, built in one place.

A deployment's keys fall in two groups:

* **partition keys** share the hash tag of their partition (`{tidings:3}`), so every job's keys,
  its queue streams and its partition's firehose live in one slot and each state transition is
  one atomic script, also on Redis Cluster. Tags are chosen so that partitions spread evenly
  over the 16,384 slots (naive tags bunch up on one master);
* **deployment keys** (queue registry, workers, task catalog, rate counters) share the tag
  `{tidings}`: one slot, so reading several of them at once is never cross-slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS = REDIS_CLUSTER_HASH_SLOTS


def spread_tags(prefix: str, partitions: int) -> tuple[str, ...]:
    """Hash tags whose slots sit near the centres of `partitions` equal slices of the slot
    space (within 1/16 of a slice), so any even split of slots over masters gets an even share
    of partitions. Partition k keeps the plain tag `prefix:k` when it already lands there."""
    if partitions == 1:
        return (f"{prefix}:0",)
    width = SLOTS / partitions
    tolerance = max(1.0, width / 16)
    tags = []
    for k in range(partitions):
        centre = (k + 0.5) * width
        n = 0
        while True:
            tag = f"{prefix}:{k}" if n == 0 else f"{prefix}:{k}.{n}"
            if abs(key_slot(tag.encode()) - centre) <= tolerance:
                break
            n += 1
        tags.append(tag)
    return tuple(tags)


@dataclass(frozen=True)
class Keys:
    """Key names for one deployment (`prefix`) with `partitions` hash-tag partitions."""

    prefix: str = "tidings"
    partitions: int = 1
    tags: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tags:
            object.__setattr__(self, "tags", spread_tags(self.prefix, self.partitions))

    def partition(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self.partitions if self.partitions > 1 else 0

    def slot(self, k: int) -> int:
        return key_slot(self.tags[k].encode())

    def _p(self, k: int) -> str:
        return "{" + self.tags[k] + "}:"

    # -- partition keys ---------------------------------------------------------------------

    def job(self, job_id: str) -> str:
        """hash: the job record and its retained events (fields "1", "2", ...)."""
        return f"{self._p(self.partition(job_id))}job:{job_id}"

    def queue(self, k: int, name: str) -> str:
        """stream: unfinished work of a queue in partition k (consumer group GROUP)."""
        return f"{self._p(k)}q:{name}"

    def sched(self, k: int, name: str) -> str:
        """zset: job ids of a queue waiting for a time (delay, retry backoff), by due ms."""
        return f"{self._p(k)}sched:{name}"

    def due(self, k: int) -> str:
        """zset: queue names by the due time of their earliest scheduled job."""
        return f"{self._p(k)}due"

    def dead(self, k: int, name: str) -> str:
        """zset: dead-lettered job ids of a queue by time of death (ms)."""
        return f"{self._p(k)}dead:{name}"

    def fire(self, k: int) -> str:
        """stream: every event of the partition (the firehose); its ids are the event ids."""
        return f"{self._p(k)}fire"

    def index(self, k: int) -> str:
        """stream: job ids in submit order (listing, search by time); trimmed by retention."""
        return f"{self._p(k)}idx"

    def stats(self, k: int) -> str:
        """hash: the partition's event counter and the metric counters kept by the scripts."""
        return f"{self._p(k)}stats"

    def trend(self, k: int, minute: int) -> str:
        """hash: per-minute counters (throughput, wait/run buckets), expiring after two hours."""
        return f"{self._p(k)}trend:{minute}"

    # -- deployment keys (one slot) -----------------------------------------------------------

    def _d(self) -> str:
        return "{" + self.prefix + "}:"

    def queues(self) -> str:
        """hash: queue name -> its settings as JSON (registered on first use, capped)."""
        return f"{self._d()}queues"

    def paused(self) -> str:
        """set: names of paused queues (workers fetch nothing new from them)."""
        return f"{self._d()}paused"

    def tasks(self) -> str:
        """hash: task name -> its spec as JSON (published by the workers that have it)."""
        return f"{self._d()}tasks"

    def workers(self) -> str:
        """zset: live worker names by last heartbeat (s)."""
        return f"{self._d()}workers"

    def worker(self, name: str) -> str:
        """string: a live worker's description as JSON, expiring with its heartbeat."""
        return f"{self._d()}w:{name}"

    def rate(self, principal: str, second: int) -> str:
        return f"{self._d()}rate:{principal}:{second}"
