"""Checking Connect request payloads before the mock imports any of them.

Everything the mock reads from a payload is checked here (ids and their prefixes, types and
statuses, dates, the shape of the subscription, the texts it filters by), so that a bad batch is
refused whole with an error naming the payload and the key (``payload[1].asset.product.id:
required``), and importing (:mod:`cancel_sandbox.marketplace.imports`) can trust what it reads.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from cancel_sandbox.marketplace import objects as o
from cancel_sandbox.marketplace.checks import SeedError

__all__ = [
    "REQUEST_TYPES",
    "REQUEST_STATUSES",
    "parse_payloads",
    "check_request",
    "need_object",
    "need_string",
    "read_time",
]

REQUEST_TYPES = ("purchase", "change", "suspend", "resume", "cancel", "adjustment")
REQUEST_STATUSES = (
    "draft", "tiers_setup", "pending", "inquiring", "approved", "failed",
    "scheduled", "revoking", "revoked",
)  # fmt: skip


def parse_payloads(text: str, where: str = "payload") -> list[Any]:
    """One JSON value (an object or an array of them) or JSON lines, as a list."""
    try:
        data = json.loads(text)
    except ValueError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise SeedError(f"{where}: not valid JSON ({whole})") from None
        data = []
        for number, line in enumerate(lines, start=1):
            try:
                data.append(json.loads(line))
            except ValueError as exc:
                raise SeedError(f"{where}: line {number} is not valid JSON ({exc})") from None
    return data if isinstance(data, list) else [data]


def need_object(value: Any, where: str, required: bool = True) -> dict[str, Any] | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        got = "nothing" if value is None else type(value).__name__
        raise SeedError(f"{where}: an object is required, got {got}")
    return value


def need_string(data: dict[str, Any], key: str, where: str, *, prefix: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise SeedError(f"{where}.{key}: a non-empty string is required")
    if prefix and not value.startswith(prefix):
        raise SeedError(f"{where}.{key}: {value!r} is not a {prefix}... id")
    return value


def read_time(data: dict[str, Any], key: str, where: str, *, exact: bool = False) -> Any:
    """The time at ``key``: whole seconds, or (``exact``) UTC at the precision given."""
    value = data.get(key)
    if value in (None, ""):
        return None
    moment = o.parse_time(value)
    if moment is None:
        raise SeedError(f"{where}.{key}: {value!r} is not an ISO 8601 date and time")
    return moment.astimezone(UTC) if exact else o.whole_seconds(moment)


def check_request(payload: Any, where: str) -> dict[str, Any]:
    """Everything the mock must understand in a request payload; raises SeedError."""
    request = need_object(payload, where)
    assert request is not None
    try:
        json.dumps(request)
    except (TypeError, ValueError) as exc:  # YAML reads unquoted times as datetimes
        raise SeedError(
            f"{where}: not a JSON object ({exc}); quote dates and times in YAML"
        ) from None
    need_string(request, "id", where, prefix="PR-")
    if request.get("type") not in REQUEST_TYPES:
        raise SeedError(
            f"{where}.type: {request.get('type')!r} is not one of {', '.join(REQUEST_TYPES)}"
        )
    if request.get("status") not in REQUEST_STATUSES:
        raise SeedError(
            f"{where}.status: {request.get('status')!r} is not one of {', '.join(REQUEST_STATUSES)}"
        )
    read_time(request, "created", where)
    for key in ("updated", "planned_date", "effective_date"):
        read_time(request, key, where)
    if request["status"] == "scheduled" and read_time(request, "planned_date", where) is None:
        raise SeedError(f"{where}.planned_date: a scheduled request needs one")
    asset = need_object(request.get("asset"), f"{where}.asset")
    assert asset is not None
    need_string(asset, "id", f"{where}.asset", prefix="AS-")
    product = need_object(asset.get("product"), f"{where}.asset.product")
    assert product is not None
    need_string(product, "id", f"{where}.asset.product", prefix="PRD-")
    connection = need_object(asset.get("connection"), f"{where}.asset.connection")
    assert connection is not None
    need_string(connection, "id", f"{where}.asset.connection")
    for key in ("vendor", "provider", "hub"):  # conversations are opened by the vendor
        part = need_object(connection.get(key), f"{where}.asset.connection.{key}", required=False)
        if part is not None and key == "vendor":
            need_string(part, "id", f"{where}.asset.connection.vendor")
        _texts(part, f"{where}.asset.connection.{key}", "id", "name")
    _texts(product, f"{where}.asset.product", "name", "icon", "status")
    if connection.get("type") not in ("production", "test", "preview"):
        raise SeedError(f"{where}.asset.connection.type: production, test or preview is required")
    for key in ("params", "items"):
        entries = asset.get(key, [])
        if not isinstance(entries, list):
            raise SeedError(f"{where}.asset.{key}: a list is required")
        for index, entry in enumerate(entries):
            entry = need_object(entry, f"{where}.asset.{key}[{index}]")
            assert entry is not None
            need_string(entry, "id", f"{where}.asset.{key}[{index}]")
    for key in ("marketplace", "contract"):  # the store indexes and filters by their ids
        for here, value in (
            (f"{where}.asset.{key}", asset.get(key)),
            (f"{where}.{key}", request.get(key)),
        ):
            found = need_object(value, here, required=False)
            if found is not None:
                need_string(found, "id", here)
                _texts(found, here, "name")
    tiers = need_object(asset.get("tiers"), f"{where}.asset.tiers", required=False) or {}
    for key, account in tiers.items():  # customer, tier1, tier2: accounts, {} when absent
        account = need_object(account, f"{where}.asset.tiers.{key}", required=False)
        _texts(account, f"{where}.asset.tiers.{key}", "id", "name", "external_id")
    assignee = request.get("assignee")
    if assignee not in (None, "") and not (
        isinstance(assignee, dict) and isinstance(assignee.get("id"), str)
    ):
        raise SeedError(f"{where}.assignee: '' or an object with an id is required")
    return request


def _texts(obj: dict[str, Any] | None, where: str, *keys: str) -> None:
    """Keys the mock reads as text (names, ids it filters by) must be text where present."""
    for key in keys if obj else ():
        value = obj.get(key)  # type: ignore[union-attr]
        if value is not None and not isinstance(value, str):
            raise SeedError(f"{where}.{key}: a string is required, got {type(value).__name__}")
