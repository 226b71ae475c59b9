"""What a soak run does: its settings, and the schedule of faults drawn from the seed before
anything runs (kills, pauses longer than the lease, one storm of each kind, each in a slot of its
own). See :mod:`bench.soak` for the run itself.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLIENT_TIMEOUT", "DEFAULT_POSTGRES_URL", "STORMS", "Event", "Schedule", "SoakSettings"]

DEFAULT_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
STORMS = ("5xx", "429", "drops", "latency", "vendor-down")
CLIENT_TIMEOUT = 3.0  # the read timeout of both clients (Connect and vendor) in the soak's config


@dataclass
class SoakSettings:
    requests: int = 10_000
    seed: int = 20261124
    store: str = "sqlite"  # sqlite: one daemon; postgres: ``replicas`` daemons on one schema
    replicas: int = 0  # 0: 1 on SQLite, 3 on PostgreSQL
    postgres_url: str = DEFAULT_POSTGRES_URL
    mode: str = "key"  # what the mock vendor offers: key | natural | read | none
    concurrency: int = 8
    lease_seconds: float = 3.0
    baseline: int = 0  # requests in the fault-free batch; 0: a tenth of the total, at least 30
    kills: int = 30
    kill_every: tuple[float, float] = (1.5, 3.0)
    pauses: int = 2
    storm_seconds: float = 5.0
    fault_seconds: float | None = (
        None  # the schedule's time bound; None: fitted to the backlog (below)
    )
    drop_rate: float = 0.02  # apply-then-drop on POSTs to both mocks, through the whole fault phase
    vendor_latency_ms: float = 10.0
    market_latency_ms: float = 0.0
    quiet_seconds: float = 600.0  # bound on the wait for quiescence after the last fault
    baseline_seconds: float = 300.0  # bound on the fault-free batch
    workdir: str | None = None
    # A vendor behind a gateway: every mutating call answered 504 and applied this many seconds
    # later (plus up to late_jitter); 0: applied at once (cancel_sandbox.vendor.late).
    late_delay: float = 0.0
    late_jitter: float = 0.0
    apply_horizon: float | None = None  # the adapter's; None: the processor's default
    # The mock vendor's asynchronous mode: every step answered 202 with an operation completed
    # this many seconds later (plus up to as much again); 0: answered at once.
    async_delay: float = 0.0

    @property
    def processes(self) -> int:
        return self.replicas or (3 if self.store == "postgres" else 1)

    @property
    def baseline_requests(self) -> int:
        return min(self.requests, self.baseline or max(30, self.requests // 10))


@dataclass(order=True)
class Event:
    at: float  # seconds after the fault phase began
    kind: str = field(compare=False)  # kill | freeze | thaw | storm | calm
    arg: Any = field(default=None, compare=False)


class Schedule:
    """The fault phase's events, drawn from the seed before anything runs."""

    def __init__(self, settings: SoakSettings, rng: random.Random, window: float) -> None:
        events: list[Event] = []
        t = rng.uniform(*settings.kill_every)
        while len(events) < settings.kills and t < window:
            events.append(Event(t, "kill"))
            t += rng.uniform(*settings.kill_every)
        # Pauses and storms one after another, each in a slot of its own, in an order drawn from the
        # seed: a storm that fell inside a pause of the only daemon would meet no call at all. A
        # pause lasts longer than the lease, so that other replicas may take over what it held.
        episodes: list[tuple[str, Any]] = [("storm", kind) for kind in STORMS]
        episodes += [("pause", j) for j in range(settings.pauses)]
        rng.shuffle(episodes)
        slot = window / len(episodes)
        for i, (kind, arg) in enumerate(episodes):
            length = (
                settings.lease_seconds + 2.0 + rng.uniform(0.0, 1.0)
                if kind == "pause"
                else settings.storm_seconds
            )
            start = i * slot + rng.uniform(0.0, max(0.0, slot - length))
            if kind == "pause":  # the thaw is set when the freeze happens (it may wait for claims)
                events.append(Event(start, "freeze", (arg, length, start + 6.0)))
            else:
                events += [Event(start, "storm", arg), Event(start + length, "calm", arg)]
        self.events = sorted(events)

    def __len__(self) -> int:
        return len(self.events)
