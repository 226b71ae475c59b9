"""The request index: answers a processor's list queries without scanning the backlog.

Requests sit in *buckets* keyed by (status, type, product, connection type, marketplace); each
bucket is a list of ``(created, id)`` kept sorted with ``bisect``. The planner takes the top-level
AND terms of a filter and consumes the ones the buckets answer:

- ``eq``/``in``/``ne``/``out`` on the five bucket dimensions pick buckets;
- ``ge``/``gt``/``le``/``lt``/``eq`` on ``created`` become a bisected range inside each bucket;
- ``out(id,...)``/``ne(id,...)`` become an exclusion checked per excluded id.

When nothing else is left and the ordering is ``created,id`` or ``-created,-id`` (the store adds
the ``id`` tie-break to every ordering), the total comes from bucket range lengths (exact,
O(buckets · log n)) and a page from index arithmetic (one bucket), a k-way merge that stops after
``offset + limit`` entries, or — for deep offsets — one C-level sort of the candidate entries. The
processor's keyset query ``and(eq(type,cancel),eq(status,pending),ge(created,..),out(id,(..)),
in(asset.product.id,(..)))`` is answered that way in well under a millisecond at 100,000 pending.
Anything else (a residual term, another ordering) falls back to a scan of the chosen buckets with
a compiled predicate: correct, O(candidates). ``eq(id,..)``/``in(id,..)`` go straight to those
records.

Insertion and removal are O(bucket size) list moves (memmove of pointers: microseconds at 100k).
Not thread-safe by itself: the store serialises access.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cancel_sandbox.marketplace.evaluate import apply_ordering, compile_filter
from cancel_sandbox.marketplace.records import Request
from cancel_sandbox.marketplace.rql import And, Cmp, Field, Node, conjuncts

__all__ = ["RequestIndex", "Plan"]

Key = tuple[str, str, str, str, str]
Entry = tuple[float, str]  # (created as a POSIX timestamp: compares faster than datetimes, id)

# Field → position in the bucket key. Requests and their subscriptions share one marketplace.
DIMENSIONS: dict[str, int] = {
    "status": 0,
    "type": 1,
    "asset.product.id": 2,
    "asset.connection.type": 3,
    "marketplace.id": 4,
    "asset.marketplace.id": 4,
}
_MAX_ID = "\U0010ffff"  # sorts after every id: (t, _MAX_ID) is "just after everything at t"
# Orderings the buckets answer directly (the store adds the id tie-break before asking).
_ASCENDING = {("created", "id")}
_DESCENDING = {("-created", "-id")}
_MERGE_OFFSET_MAX = 2000  # beyond this offset a sort of the candidates beats a k-way merge


def bucket_key(request: Request) -> Key:
    asset = request.asset
    return (
        request.status,
        request.type,
        asset.product.id,
        asset.connection["type"],
        asset.marketplace["id"],
    )


def entry_of(request: Request) -> Entry:
    return (request.created.timestamp(), request.id)


@dataclass
class Plan:
    allowed: list[set[Any] | None] = field(default_factory=lambda: [None] * 5)
    excluded: list[set[Any]] = field(default_factory=lambda: [set() for _ in range(5)])
    low: Entry | None = None  # entries >= low
    high: Entry | None = None  # entries < high
    excluded_ids: set[str] = field(default_factory=set)
    only_ids: set[str] | None = None
    residual: list[Node] = field(default_factory=list)

    def admits(self, key: Key) -> bool:
        for position, value in enumerate(key):
            allowed = self.allowed[position]
            if allowed is not None and value not in allowed:
                return False
            if value in self.excluded[position]:
                return False
        return True

    def in_range(self, entry: Entry) -> bool:
        return (self.low is None or entry >= self.low) and (self.high is None or entry < self.high)

    def _raise_low(self, entry: Entry) -> None:
        self.low = entry if self.low is None else max(self.low, entry)

    def _lower_high(self, entry: Entry) -> None:
        self.high = entry if self.high is None else min(self.high, entry)

    def take(self, term: Node) -> bool:
        """Consume ``term`` if the index answers it; False leaves it to the residual filter."""
        if not isinstance(term, Cmp):
            return False
        op, name, value = term.op, term.field, term.value
        if name in DIMENSIONS:
            position = DIMENSIONS[name]
            if op in ("eq", "in"):
                values = {value} if op == "eq" else set(value)
                current = self.allowed[position]
                self.allowed[position] = values if current is None else current & values
                return True
            if op in ("ne", "out"):
                self.excluded[position] |= {value} if op == "ne" else set(value)
                return True
            return False
        if name == "created" and value is not None and op in ("eq", "ge", "gt", "le", "lt"):
            value = value.timestamp()
            if op in ("eq", "ge"):
                self._raise_low((value, ""))
            if op == "gt":
                self._raise_low((value, _MAX_ID))
            if op in ("eq", "le"):
                self._lower_high((value, _MAX_ID))
            if op == "lt":
                self._lower_high((value, ""))
            return True
        if name == "id" and op in ("ne", "out"):
            self.excluded_ids |= {value} if op == "ne" else set(value)
            return True
        if name == "id" and op in ("eq", "in"):
            values = {value} if op == "eq" else set(value)
            self.only_ids = values if self.only_ids is None else self.only_ids & values
            return True
        return False


class RequestIndex:
    def __init__(self) -> None:
        self._buckets: dict[Key, list[Entry]] = {}

    def add(self, request: Request) -> None:
        insort(self._buckets.setdefault(bucket_key(request), []), entry_of(request))

    def remove(self, request: Request, key: Key | None = None) -> None:
        bucket = self._buckets[key or bucket_key(request)]
        entry = entry_of(request)
        position = bisect_left(bucket, entry)
        if position < len(bucket) and bucket[position] == entry:
            del bucket[position]

    def counts(self) -> dict[Key, int]:
        return {key: len(bucket) for key, bucket in self._buckets.items() if bucket}

    def query(
        self,
        node: Node | None,
        ordering: tuple[str, ...],
        offset: int,
        limit: int,
        records: Mapping[str, Request],
        fields: Mapping[str, Field],
    ) -> tuple[int, list[Request]]:
        """(total matches, the page) for a filter; see the module docstring for the plan."""
        plan = Plan()
        for term in conjuncts(node):
            if not plan.take(term):
                plan.residual.append(term)
        if plan.only_ids is not None:
            return self._direct(plan, node, ordering, offset, limit, records, fields)
        created_order = ordering in _ASCENDING or ordering in _DESCENDING
        if created_order and not plan.residual:
            return self._counted(plan, ordering in _DESCENDING, offset, limit, records)
        # A scan: each bucket slice is filtered on its own, then the (fewer) matches are sorted.
        predicate = compile_filter(And(tuple(plan.residual)) if plan.residual else None, fields)
        excluded = plan.excluded_ids
        matches = [
            records[request_id]
            for bucket, start, stop in self._slices(plan)
            for _created, request_id in bucket[start:stop]
            if request_id not in excluded and predicate(records[request_id])
        ]
        if created_order:
            matches.sort(key=lambda r: (r.created, r.id), reverse=ordering in _DESCENDING)
        else:
            matches.sort(key=lambda r: (r.created, r.id))
            apply_ordering(matches, ordering, fields)
        return len(matches), matches[offset : offset + limit]

    def _slices(self, plan: Plan) -> list[tuple[list[Entry], int, int]]:
        out = []
        for key, bucket in self._buckets.items():
            if not bucket or not plan.admits(key):
                continue
            start = 0 if plan.low is None else bisect_left(bucket, plan.low)
            stop = len(bucket) if plan.high is None else bisect_left(bucket, plan.high)
            if start < stop:
                out.append((bucket, start, stop))
        return out

    def _merged(self, plan: Plan, descending: bool) -> Iterator[Entry]:
        runs: list[Iterable[Entry]] = []
        for bucket, start, stop in self._slices(plan):
            # Index ranges, not slices: a slice would copy up to 100k pointers per page.
            indexes = range(stop - 1, start - 1, -1) if descending else range(start, stop)
            runs.append(map(bucket.__getitem__, indexes))
        if len(runs) == 1:
            return iter(runs[0])
        return heapq.merge(*runs, reverse=descending)

    def _counted(
        self, plan: Plan, descending: bool, offset: int, limit: int, records: Mapping[str, Request]
    ) -> tuple[int, list[Request]]:
        slices = self._slices(plan)
        excluded_in_range = {
            request_id
            for request_id in plan.excluded_ids
            if (request := records.get(request_id)) is not None
            and plan.admits(bucket_key(request))
            and plan.in_range(entry_of(request))
        }
        total = sum(stop - start for _bucket, start, stop in slices) - len(excluded_in_range)
        if limit <= 0 or offset >= total:
            return total, []
        if len(slices) == 1 and not excluded_in_range:
            # One bucket, nothing excluded: the page is a plain index range.
            bucket, start, stop = slices[0]
            if descending:
                first = stop - 1 - offset
                entries = bucket[max(start, first - limit + 1) : first + 1][::-1]
            else:
                entries = bucket[start + offset : min(stop, start + offset + limit)]
            return total, [records[request_id] for _created, request_id in entries]
        if offset > _MERGE_OFFSET_MAX:
            # Deep pages: materialise the merged order (timsort merges the sorted runs in C)
            # rather than stepping through offset entries of a Python-level k-way merge.
            ordered = sorted(
                (entry for bucket, start, stop in slices for entry in bucket[start:stop]),
                reverse=descending,
            )
            if excluded_in_range:
                ordered = [entry for entry in ordered if entry[1] not in excluded_in_range]
            return total, [
                records[request_id] for _created, request_id in ordered[offset : offset + limit]
            ]
        page: list[Request] = []
        skipped = 0
        for _created, request_id in self._merged(plan, descending):
            if request_id in excluded_in_range:
                continue
            if skipped < offset:
                skipped += 1
                continue
            page.append(records[request_id])
            if len(page) >= limit:
                break
        return total, page

    def _direct(
        self,
        plan: Plan,
        node: Node | None,
        ordering: tuple[str, ...],
        offset: int,
        limit: int,
        records: Mapping[str, Request],
        fields: Mapping[str, Field],
    ) -> tuple[int, list[Request]]:
        predicate: Callable[[Request], bool] = compile_filter(node, fields)
        assert plan.only_ids is not None
        matches = [records[i] for i in plan.only_ids if i in records and predicate(records[i])]
        matches.sort(key=lambda r: (r.created, r.id))
        if ordering not in _ASCENDING:
            apply_ordering(matches, ordering, fields)
        return len(matches), matches[offset : offset + limit]
