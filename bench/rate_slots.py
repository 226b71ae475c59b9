"""What a shared rate slot costs: milliseconds per take on PostgreSQL, p50 and p99.

Three measures, in a throwaway schema dropped afterwards:

- ``free``: one thread taking slots that are always free (100 slots, a 10 ms window), the cost a
  vendor call pays when nothing waits;
- ``contended``: three journals ("replicas", a pool each) with 8 threads each taking slots that
  are always free, the cost while every replica's workers take at once;
- ``limited``: the same 24 threads against a limit of ``--calls`` per second for ``--seconds``,
  counting the statements per slot actually taken (waiting threads ask again when they wake).

    python bench/rate_slots.py [--takes 2000] [--calls 10] [--seconds 5] [--postgres-url URL]

Numbers depend on the server and the host (2 cores shared here): compare on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.journal import open_journal, redact_url  # noqa: E402
from processor.journal.base import Journal  # noqa: E402
from processor.journal.rate_slots import RateSlots, shared_rate_slots  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REPLICAS, THREADS = 3, 8
# "Always free": 100 slots whose window is 10 ms, a real limit's row count whose slots free
# faster than the threads take them.
FREE_CALLS, FREE_WINDOW = 100, 0.01


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.50):.2f} ms  p99 {at(0.99):.2f} ms  ({len(ordered)} takes)"


def timed_takes(slots: RateSlots, adapter: str, takes: int, out: list[float]) -> None:
    for _ in range(takes):
        started = time.perf_counter()
        slots.take(adapter, FREE_CALLS, FREE_WINDOW)
        out.append(time.perf_counter() - started)


def limited(replicas: list[RateSlots], calls: int, seconds: float) -> tuple[int, int]:
    """(slots taken, statements run) by every thread of every replica for ``seconds``."""
    taken, asked = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(slots: RateSlots) -> None:
        while time.monotonic() < deadline:
            wait = slots.take("limited", calls, 1.0)
            with lock:
                asked[0] += 1
                taken[0] += wait == 0.0
            if wait:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    threads = [threading.Thread(target=worker, args=(s,)) for s in replicas for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    return taken[0], asked[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--takes", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    args = parser.parse_args()
    schema = f"bench_rate_{uuid.uuid4().hex[:8]}"
    journals: list[Journal] = []
    try:
        for _ in range(REPLICAS):
            journals.append(open_journal(args.postgres_url, schema=schema, pool_size=THREADS))
        journals[0].migrate()
        replicas = [s for s in map(shared_rate_slots, journals) if s is not None]
        print(f"PostgreSQL {redact_url(args.postgres_url)}, schema {schema}")
        for adapter in ("warm", "free"):  # the first pass warms the pool and the plan cache
            alone: list[float] = []
            timed_takes(replicas[0], adapter, args.takes, alone)
        print(f"free, 1 thread:               {percentiles(alone)}")
        together: list[float] = []
        threads = [
            threading.Thread(
                target=timed_takes, args=(s, "contended", args.takes // THREADS, together)
            )
            for s in replicas
            for _ in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        print(f"contended, {REPLICAS} x {THREADS} threads:    {percentiles(together)}")
        taken, asked = limited(replicas, args.calls, args.seconds)
        print(
            f"limited to {args.calls}/s, {REPLICAS} x {THREADS} threads, {args.seconds:g} s: "
            f"{taken} slots taken ({taken / args.seconds:.1f}/s), {asked} statements "
            f"({asked / max(taken, 1):.1f} per slot)"
        )
    finally:
        for journal in journals:
            journal.close()
        import psycopg
        from psycopg import sql

        with psycopg.connect(args.postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
