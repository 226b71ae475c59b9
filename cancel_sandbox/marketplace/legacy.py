"""The old django-filter query syntax, which Connect's API still converts to RQL.

Connect's services sit behind django-rql's compatibility backend, so ``?status=pending&
asset.product.id__in=PRD-1,PRD-2&limit=1000`` — what the legacy connect-sdk sends — works there,
and must work here. Supported lookups: ``in``, ``isnull``, ``gt``, ``gte``, ``lt``, ``lte``,
``exact``, ``iexact``, ``(i)contains``, ``(i)startswith``, ``(i)endswith``, and the ``ordering=``
/ ``order_by=`` parameters. ``regex`` is not (nor is it in Connect): such a parameter stays as it
is and is then refused as an unknown field.
"""

from __future__ import annotations

import re

from cancel_sandbox.marketplace.rql_error import RQLError

__all__ = ["from_django_filter"]

_DJANGO_FILTER = re.compile(r"^([A-Za-z][\w.\-]*)__([a-z]+)=(.*)$", re.DOTALL)
_DJANGO_COMPARISONS = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}
_ORDERING_PARAM = re.compile(r"^(?:ordering|order_by)=(.+)$")


def _quoted(value: str) -> str:
    for quote in ('"', "'"):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise RQLError(f"Cannot quote the value {value!r}.")


def from_django_filter(segment: str) -> str | None:
    """The old django-filter syntax Connect still accepts (the legacy SDK sends it), as RQL:
    ``asset.product.id__in=PRD-1,PRD-2`` → ``in(asset.product.id,("PRD-1","PRD-2"))``, likewise
    ``__isnull``, ``__gt/__gte/__lt/__lte``, ``__exact``, ``__(i)contains``, ``__(i)startswith``,
    ``__(i)endswith``, and ``ordering=``/``order_by=``. None when the segment is not that syntax."""
    if match := _ORDERING_PARAM.match(segment):
        return f"ordering({match.group(1)})"
    match = _DJANGO_FILTER.match(segment)
    if match is None:
        return None
    field, lookup, value = match.groups()
    if lookup == "in":
        return f"in({field},({','.join(_quoted(v) for v in value.split(',') if v)}))"
    if lookup == "isnull":
        if value.lower() not in ("true", "false", "1", "0"):
            raise RQLError(f"{field}__isnull: expected true or false, got {value!r}.")
        return f"{'eq' if value.lower() in ('true', '1') else 'ne'}({field},null())"
    if lookup in _DJANGO_COMPARISONS:
        return f"{_DJANGO_COMPARISONS[lookup]}({field},{_quoted(value)})"
    # lookup (without the "i" of its case-insensitive twin) → (* before, * after)
    wildcards = {
        "exact": (False, False),
        "contains": (True, True),
        "startswith": (False, True),
        "endswith": (True, False),
    }.get(lookup.removeprefix("i"))
    if wildcards is None:
        return None
    if wildcards[0] and not value.startswith("*"):
        value = "*" + value
    if wildcards[1] and not value.endswith("*"):
        value += "*"
    return f"{'ilike' if lookup.startswith('i') else 'like'}({field},{_quoted(value)})"
