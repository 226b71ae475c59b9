"""The journal's shared rate slots (processor.journal.rate_slots): on PostgreSQL, ``calls`` slots
per window whichever replicas take them; SQLite offers none (each adapter keeps its own limit)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from processor.journal import open_journal
from processor.journal.base import Journal
from processor.journal.rate_slots import MIN_WAIT, RateSlots, shared_rate_slots

from .. import journal_support
from ..journal_support import Store, fresh_postgres_schema

store, clock = journal_support.store, journal_support.clock

WORKERS = 4  # threads per replica
Replica = Callable[[], RateSlots]


def test_only_postgresql_shares_a_limit(store: Store) -> None:
    slots = shared_rate_slots(store.journal)
    assert (slots is None) == (store.kind == "sqlite")


@pytest.fixture
def replica(postgres_url: str) -> Iterator[Replica]:
    """Opens journals ("replicas", a pool each) on one fresh schema; drops it afterwards."""
    opened: list[Journal] = []
    with fresh_postgres_schema(postgres_url, "rate_slots_test") as schema:

        def open_replica() -> RateSlots:
            journal = open_journal(postgres_url, schema=schema, connect_timeout=5)
            opened.append(journal)
            if len(opened) == 1:
                journal.migrate()
            slots = shared_rate_slots(journal)
            assert slots is not None
            return slots

        try:
            yield open_replica
        finally:
            for journal in opened:
                journal.close()


@pytest.mark.postgres
def test_three_replicas_take_calls_slots_in_a_window_and_no_more(
    replica: Replica,
) -> None:
    replicas = [replica() for _ in range(3)]
    calls, window = 5, 2.0
    taken: Counter[int] = Counter()
    lock = threading.Lock()

    def worker(index: int) -> None:
        deadline = time.monotonic() + 0.6  # well inside the window: no slot frees meanwhile
        for _ in range(200):
            if time.monotonic() > deadline:
                return
            if replicas[index].take("vendor", calls, window) == 0.0:
                with lock:
                    taken[index] += 1

    threads = [threading.Thread(target=worker, args=(i % 3,)) for i in range(3 * WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(taken.values()) == calls, taken
    # another adapter's slots are its own
    assert replicas[0].take("other", 1, window) == 0.0


@pytest.mark.postgres
def test_a_full_window_answers_the_wait_and_frees_after_it(replica: Replica) -> None:
    slots = replica()
    assert slots.take("vendor", 1, 0.4) == 0.0
    wait = slots.take("vendor", 1, 0.4)
    assert MIN_WAIT <= wait <= 0.4
    time.sleep(wait + 0.05)
    assert slots.take("vendor", 1, 0.4) == 0.0


@pytest.mark.postgres
def test_more_calls_add_slots_and_fewer_use_the_first_ones(replica: Replica) -> None:
    slots = replica()
    assert [slots.take("vendor", 2, 30.0) for _ in range(3)].count(0.0) == 2
    assert [slots.take("vendor", 4, 30.0) for _ in range(3)].count(0.0) == 2
    assert slots.take("vendor", 1, 30.0) > 0  # slot 0 is in use: a smaller limit holds at once
    assert [slots.take("vendor", 5, 30.0) for _ in range(2)].count(0.0) == 1  # the fifth


@pytest.mark.postgres
def test_bad_arguments_are_refused_before_the_database(replica: Replica) -> None:
    slots = replica()
    for adapter, calls, window in (("", 1, 1.0), ("a", 0, 1.0), ("a", True, 1.0), ("a", 1, -1.0)):
        with pytest.raises(ValueError):
            slots.take(adapter, calls, window)
