"""Serving an imported Connect object back as it came, plus only what the mock changed since.

An imported request (or subscription) keeps three JSON documents: ``raw``, the object exactly as
Connect returned it; ``baseline``, the mock's own rendering of it right after the import; and,
at each read, ``current``, the mock's rendering now. :func:`overlay` answers ``raw`` with the
differences between ``baseline`` and ``current`` applied, so fields the mock does not model
(a phone parameter's ``structured_value``, ``external_attributes``, an item's ``params``, the
absence of ``asset.status`` in a 2019 payload) stay exactly as they were, while a status change,
a new assignee, a parameter value set by ``PUT`` or an activation key show up in place.

Lists of objects with ids (parameters, items) are matched by id and keep ``raw``'s order; other
lists are replaced as a whole when they changed.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["overlay"]

_ABSENT: Any = object()


def _by_id(items: list[Any]) -> dict[str, Any] | None:
    """``{id: item}`` when every item is an object with a distinct string id; None otherwise."""
    found: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or item["id"] in found:
            return None
        found[item["id"]] = item
    return found


def _list(raw: list[Any], baseline: Any, current: list[Any]) -> list[Any]:
    raw_ids, current_ids = _by_id(raw), _by_id(current)
    base_ids = _by_id(baseline) if isinstance(baseline, list) else None
    if raw_ids is None or current_ids is None or base_ids is None:
        return copy.deepcopy(current)
    out = []
    for item in raw:
        if item["id"] in current_ids:
            out.append(overlay(item, base_ids.get(item["id"], _ABSENT), current_ids[item["id"]]))
        # an item the mock no longer renders is dropped, as it would be from Connect's answer
    out += [copy.deepcopy(item) for key, item in current_ids.items() if key not in raw_ids]
    return out


def overlay(raw: Any, baseline: Any, current: Any) -> Any:
    """``raw`` with the changes from ``baseline`` to ``current``; never mutates its arguments."""
    if baseline is not _ABSENT and baseline == current:
        return copy.deepcopy(raw) if raw is not _ABSENT else copy.deepcopy(current)
    if isinstance(raw, dict) and isinstance(current, dict):
        base = baseline if isinstance(baseline, dict) else {}
        out = copy.deepcopy(raw)
        for key, value in current.items():
            before = base.get(key, _ABSENT)
            if before is _ABSENT or before != value:
                out[key] = overlay(raw.get(key, _ABSENT), before, value)
        for key in base:
            if key not in current:
                out.pop(key, None)
        return out
    if isinstance(raw, list) and isinstance(current, list):
        return _list(raw, baseline, current)
    return copy.deepcopy(current)
