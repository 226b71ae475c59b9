"""Parameter values sent by ``PUT /requests/{id}`` and ``POST /requests``, checked as Connect does.

A value must be text (a number is taken as its decimal text); an object or a list is refused
rather than stored as Python's ``repr`` (``"{'a': 1}"``). A ``choice`` or ``dropdown`` parameter
accepts only one of its choices (or ``""``, which clears it); an ``email`` one an address.
Structured values (``structured_value``: phone, address, checkbox parameters) are not writable in
this mock: they are refused with a message that says so, instead of being dropped in silence.
"""

from __future__ import annotations

import re
from typing import Any

from cancel_sandbox.marketplace.errors import invalid

__all__ = ["param_values", "choices_of"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CHOICE_TYPES = ("choice", "dropdown")


def choices_of(definition: dict[str, Any]) -> list[str] | None:
    """The allowed values of a choice parameter; None when it declares none (anything goes)."""
    constraints = definition.get("constraints")
    constraints = constraints if isinstance(constraints, dict) else {}  # imported: any shape
    meta = constraints.get("meta")
    for source in (
        definition.get("value_choices"),
        constraints.get("choices"),
        meta.get("choices") if isinstance(meta, dict) else None,
    ):
        if isinstance(source, list) and source:
            return [str(c.get("value")) if isinstance(c, dict) else str(c) for c in source]
    return None


def _text(param_id: str, key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid(
            "asset.params",
            f"{param_id}.{key}: a string is required, got {type(value).__name__}.",
        )
    return value if isinstance(value, str) else str(value)


def _check_value(definition: dict[str, Any], value: str) -> None:
    if value == "":
        return
    kind = definition.get("type")
    if kind in _CHOICE_TYPES:
        allowed = choices_of(definition)
        if allowed is not None and value not in allowed:
            raise invalid(
                "asset.params",
                f"{definition['id']}: {value[:80]!r} is not one of its choices "
                f"({', '.join(allowed)}).",
            )
    elif kind == "email" and not _EMAIL.fullmatch(value):
        raise invalid(
            "asset.params", f"{definition['id']}: {value[:80]!r} is not an email address."
        )


def param_values(
    definitions: list[dict[str, Any]], given: Any, *, phases: tuple[str, ...] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Validate ``[{"id", "value", "value_error"}]`` against a product's parameter definitions;
    the values and the value errors by parameter id. Raises a 400 :class:`ApiError`."""
    known = {p["id"]: p for p in definitions}
    if not isinstance(given, list):
        raise invalid("asset.params", "a list of {id, value} objects is required.")
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    for item in given:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise invalid("asset.params", "each parameter needs an id.")
        definition = known.get(item["id"])
        if definition is None or (phases is not None and definition.get("phase") not in phases):
            raise invalid("asset.params", f"unknown parameter {item['id'][:80]!r}.")
        if item.get("structured_value") is not None:
            raise invalid(
                "asset.params",
                f"{item['id']}: structured_value cannot be written on this mock; send value.",
            )
        if "value" in item:
            value = _text(item["id"], "value", item["value"])
            _check_value(definition, value)
            values[item["id"]] = value
        if "value_error" in item:
            errors[item["id"]] = _text(item["id"], "value_error", item["value_error"])
    return values, errors
