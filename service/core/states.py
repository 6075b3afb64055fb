"""The job state machine, defined once.

The scripts receive these tables in their prelude (see `scripts.py`) and refuse any other
transition; the dashboard reads them from `GET /api/contract`; a test checks that the Lua
names no state that is not here.
"""

from __future__ import annotations

from typing import Final, Literal

State = Literal["queued", "scheduled", "running", "succeeded", "failed", "cancelled"]
STATES: Final[tuple[State, ...]] = (
    "queued",
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
TERMINAL: Final[frozenset[str]] = frozenset({"succeeded", "failed", "cancelled"})

# from -> allowed next states; "" is "no job yet" (submit)
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "": frozenset({"queued", "scheduled"}),
    "queued": frozenset({"running", "cancelled"}),  # start; cancel
    "scheduled": frozenset({"queued", "cancelled"}),  # promote when due; cancel
    # finish (retry backoff = scheduled, hand-back = queued); takeover (running again)
    "running": frozenset({"succeeded", "failed", "cancelled", "scheduled", "queued", "running"}),
    "succeeded": frozenset(),
    "failed": frozenset({"queued"}),  # retry
    "cancelled": frozenset({"queued"}),  # retry
}

# event type -> the state a job is in right after it (retrying: see `state_after`)
EVENT_STATE: Final[dict[str, State]] = {
    "queued": "queued",
    "scheduled": "scheduled",
    "started": "running",
    "progress": "running",
    "log": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
EVENT_TYPES: Final[tuple[str, ...]] = (
    "queued",
    "scheduled",
    "started",
    "progress",
    "log",
    "retrying",
    "succeeded",
    "failed",
    "cancelled",
    "snapshot",
    "gone",
)
TERMINAL_EVENTS: Final[frozenset[str]] = frozenset({"succeeded", "failed", "cancelled", "gone"})


def state_after(event_type: str, *, due: bool = False) -> State:
    """The job's state after an event. `retrying` waits for its backoff (scheduled) when it
    carries a due time, and is restarted at once (running) when a lost worker was replaced."""
    if event_type == "retrying":
        return "scheduled" if due else "running"
    return EVENT_STATE[event_type]


def contract_document() -> dict[str, object]:
    """What the dashboard and other clients need to know of the state machine."""
    return {
        "states": list(STATES),
        "terminal": sorted(TERMINAL),
        "transitions": {k or "new": sorted(v) for k, v in TRANSITIONS.items()},
        "events": {t: (EVENT_STATE.get(t) or "") for t in EVENT_TYPES},
        "terminal_events": sorted(TERMINAL_EVENTS),
    }
