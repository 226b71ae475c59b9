"""Journal throughput: transitions per second for each store at 1 and 32 threads.

Each request goes ensure -> claim -> 3 transitions -> release, the shape of one request's pass
through the engine; the figure printed is transitions per second (3 per request). SQLite is
measured with both connection strategies (one shared connection behind a lock, one connection per
thread), which is how the SQLite store's default was chosen. PostgreSQL runs in a throwaway schema
that is dropped afterwards; it is skipped when the server cannot be reached.

    python bench/journal_throughput.py [--requests 300] [--postgres-url URL] [--no-postgres]

Numbers depend on the disk (SQLite commits with synchronous=FULL, i.e. an fsync per transition)
and on the server's ``fsync``/``synchronous_commit`` settings: compare ratios on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.journal import open_journal, redact_url  # noqa: E402
from processor.journal.base import Journal, State  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
THREADS = (1, 32)
TRANSITIONS_PER_REQUEST = 3


def one_request(journal: Journal, request_id: str, owner: str) -> None:
    journal.ensure(
        request_id, idempotency_key=f"cancel-{request_id}", subscription_id=f"SUB-{request_id}"
    )
    claim = journal.claim(request_id, owner, lease_seconds=60)
    if claim is None:
        raise RuntimeError(f"{request_id} could not be claimed")
    claim = journal.transition(claim, State.TERMINATING, detail="intent", attempts=1)
    claim = journal.transition(claim, State.TERMINATED, outcome="terminated")
    claim = journal.transition(claim, State.APPROVED, noted="approved")
    journal.release(claim)


def measure(journal: Journal, threads: int, requests: int) -> float:
    """Transitions per second for ``requests`` requests spread over ``threads`` threads."""
    run = uuid.uuid4().hex[:8]
    ids = [f"PR-{run}-{n:06d}" for n in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [
            pool.submit(one_request, journal, rid, f"bench-{n % threads}")
            for n, rid in enumerate(ids)
        ]
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - started
    return requests * TRANSITIONS_PER_REQUEST / elapsed


def sqlite_store(connections: str) -> Callable[[int], tuple[Journal, Callable[[], None]]]:
    def make(threads: int) -> tuple[Journal, Callable[[], None]]:
        folder = tempfile.TemporaryDirectory(prefix="journal-bench-")
        url = f"sqlite:///{folder.name}/journal.db"
        journal = open_journal(url, connections=connections, auto_migrate=True)

        def done() -> None:
            journal.close()
            folder.cleanup()

        return journal, done

    return make


def postgres_store(url: str) -> Callable[[int], tuple[Journal, Callable[[], None]]]:
    def make(threads: int) -> tuple[Journal, Callable[[], None]]:
        import psycopg
        from psycopg import sql

        schema = f"journal_bench_{uuid.uuid4().hex[:8]}"
        journal = open_journal(
            url, schema=schema, pool_size=max(threads, 2), min_size=max(threads, 2)
        )
        journal.migrate()

        def done() -> None:
            journal.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

        return journal, done

    return make


def postgres_reachable(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not measured here"
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=300, help="requests per measurement (default 300)"
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    args = parser.parse_args(argv)

    stores: list[tuple[str, Callable[[int], tuple[Journal, Callable[[], None]]]]] = [
        ("sqlite (shared connection)", sqlite_store("shared")),
        ("sqlite (connection per thread)", sqlite_store("per-thread")),
    ]
    if not args.no_postgres:
        problem = postgres_reachable(args.postgres_url)
        if problem is None:
            stores.append(("postgresql", postgres_store(args.postgres_url)))
        else:
            print(f"postgresql at {redact_url(args.postgres_url)} skipped: {problem}")

    print(
        f"{'store':32} "
        + " ".join(f"{f'{t} thread(s)':>14}" for t in THREADS)
        + "   (transitions/s)"
    )
    for name, make in stores:
        figures = []
        for threads in THREADS:
            journal, done = make(threads)
            try:
                measure(journal, threads, min(20, args.requests))  # warm up: connections, caches
                figures.append(measure(journal, threads, args.requests))
            finally:
                done()
        print(f"{name:32} " + " ".join(f"{f:14.0f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
