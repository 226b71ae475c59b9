"""Evaluating parsed RQL over records: predicates, orderings, tie-breaks, small-collection queries.

:func:`compile_filter` turns a :class:`~cancel_sandbox.marketplace.rql.Node` tree into a predicate
that reads records through a collection's field table (no rendering). Comparisons follow lib-rql:
``eq``/``ne`` are plain equality (``ne`` holds for a missing value), ordered comparisons are false
when either side is missing or the types do not compare. Orderings put missing values first when
ascending (SQL's NULLS FIRST) and always end with an ``id`` tie-break, so equal ``created`` values
come back in the same order on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cancel_sandbox.marketplace.rql import And, Cmp, Field, Node, Not, Or, Query
from cancel_sandbox.marketplace.rql_error import RQLError

__all__ = ["compile_filter", "sort_key", "apply_ordering", "with_tiebreak", "run_query"]


def _ordered(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return False
    try:
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


def _scalar_test(op: str, expected: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda value: value == expected
    if op == "ne":
        return lambda value: value != expected
    if op == "in":
        allowed = frozenset(expected)
        return lambda value: value in allowed
    if op == "out":
        excluded = frozenset(expected)
        return lambda value: value not in excluded
    if op in ("like", "ilike"):
        return lambda value: value is not None and expected.match(str(value)) is not None
    if op in ("gt", "ge", "lt", "le"):
        return lambda value: _ordered(op, value, expected)
    raise RQLError(f"Unknown operator: {op}.")


def compile_filter(node: Node | None, fields: Mapping[str, Field]) -> Callable[[Any], bool]:
    """A predicate over records for ``node`` (``None``: everything matches)."""
    if node is None:
        return lambda record: True
    if isinstance(node, And):
        parts = [compile_filter(child, fields) for child in node.children]
        return lambda record: all(part(record) for part in parts)
    if isinstance(node, Or):
        parts = [compile_filter(child, fields) for child in node.children]
        return lambda record: any(part(record) for part in parts)
    if isinstance(node, Not):
        inner = compile_filter(node.child, fields)
        return lambda record: not inner(record)
    assert isinstance(node, Cmp)
    spec = fields[node.field]
    get = spec.get
    if not spec.many:
        test = _scalar_test(node.op, node.value)
        return lambda record: test(get(record))
    if node.op in ("ne", "out"):
        # Through a list, "ne x" means "no element is x" (what a join with NOT EXISTS answers).
        positive = _scalar_test("eq" if node.op == "ne" else "in", node.value)
        return lambda record: not any(positive(value) for value in get(record))
    if node.op == "eq" and node.value is None:
        return lambda record: not get(record)
    test = _scalar_test(node.op, node.value)
    return lambda record: any(test(value) for value in get(record))


class _Low:
    """Sorts before everything: missing values come first ascending, as SQL's NULLS FIRST."""

    def __lt__(self, other: object) -> bool:
        return not isinstance(other, _Low)

    def __gt__(self, other: object) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Low)

    __hash__ = object.__hash__


_LOW = _Low()


def sort_key(name: str, fields: Mapping[str, Field]) -> Callable[[Any], Any]:
    spec = fields[name]
    if spec.many:
        return lambda record: min(spec.get(record), default=_LOW)

    def key(record: Any) -> Any:
        value = spec.get(record)
        return _LOW if value is None else value

    return key


def apply_ordering(
    records: list[Any], ordering: Sequence[str], fields: Mapping[str, Field]
) -> list[Any]:
    """Stable multi-key sort, last key first, so mixed directions work (``ordering(a,-b)``)."""
    for name in reversed(ordering):
        records.sort(key=sort_key(name.lstrip("-"), fields), reverse=name.startswith("-"))
    return records


def with_tiebreak(ordering: Sequence[str]) -> tuple[str, ...]:
    """The ordering with ``id`` appended when absent, in the direction of the first key, so that
    equal values (ties in ``created`` are common) always come in the same order; no ordering
    means ``created,id``."""
    keys = tuple(ordering) or ("created",)
    if any(key.lstrip("-") == "id" for key in keys):
        return keys
    return (*keys, "-id" if keys[0].startswith("-") else "id")


def run_query(
    records: Iterable[Any],
    query: Query,
    fields: Mapping[str, Field],
    default_ordering: Sequence[str] = (),
) -> tuple[int, list[Any]]:
    """Filter, order and page a small collection by scanning it: (total, page)."""
    predicate = compile_filter(query.filter, fields)
    matches = [record for record in records if predicate(record)]
    ordering = query.ordering or tuple(default_ordering)
    apply_ordering(
        matches, with_tiebreak(ordering) if "id" in fields and ordering else ordering, fields
    )
    return len(matches), matches[query.offset : query.offset + query.limit]
