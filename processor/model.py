"""The typed, read-only view of a Connect cancel request that the engine works with.

Real payloads are irregular (see the contract test over public fixtures): optional blocks go
missing, ``assignee`` is ``""`` or an object, quantities are strings ("unlimited" included),
2019-era requests lack ``asset.marketplace``. Parsing is tolerant of all of that; what the engine
cannot work with at all (no id, no asset) raises :class:`MalformedRequest`, which the engine turns
into a recorded outcome instead of an exception that stops the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CancelRequest",
    "Item",
    "MalformedRequest",
    "parse_request",
    "parse_datetime",
    "ENVIRONMENTS",
    "EXTERNAL_ID",
]

ENVIRONMENTS = ("preview", "test", "production")
EXTERNAL_ID = "asset.external_id"


class MalformedRequest(ValueError):
    """The payload lacks something the processor cannot do without."""

    def __init__(self, request_id: str | None, problem: str) -> None:
        super().__init__(f"request {request_id or '<no id>'}: {problem}")
        self.request_id = request_id
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    mpn: str
    quantity: str
    period: str | None = None
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class CancelRequest:
    id: str
    type: str
    status: str
    asset_id: str
    product_id: str
    environment: str  # connection type: preview | test | production
    created: datetime | None = None
    updated: datetime | None = None
    planned_date: datetime | None = None
    asset_status: str | None = None
    marketplace_id: str | None = None
    customer_id: str | None = None
    customer_name: str | None = None
    external_id: str | None = None
    # The vendor-side identifier of the subscription: the configured fulfillment parameter, or
    # asset.external_id when so configured. None when absent: the engine records a clear outcome.
    subscription_id: str | None = None
    items: tuple[Item, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    assignee: str | None = None
    billing_next_date: datetime | None = None

    @property
    def is_cancel(self) -> bool:
        return self.type == "cancel"

    def param(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value not in (None, "") else None

    def log_context(self) -> dict[str, str | None]:
        """The fields bound to every log event about this request."""
        return {
            "request_id": self.id,
            "subscription_id": self.subscription_id,
            "asset_id": self.asset_id,
            "product_id": self.product_id,
            "environment": self.environment,
        }


def parse_datetime(value: Any) -> datetime | None:
    """Connect writes ISO 8601 with an offset (``+00:00``) or ``Z``; naive means UTC. Anything
    else (a number, a list, a text that is no date) is None: callers decide whether that matters."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    try:
        dt.astimezone(UTC)  # 0001-01-01T00:00+01:00 is before the first UTC instant
    except OverflowError:
        return None
    return dt


def _identifier(value: Any) -> str | None:
    """A Connect id: a non-empty string. Numbers, objects and lists are not ids (a payload with
    one is malformed, not an id to act on under its printed form)."""
    return value.strip() or None if isinstance(value, str) else None


def _date_field(
    data: Mapping[str, Any], name: str, request_id: str | None, label: str = ""
) -> datetime | None:
    """An optional date: absent or null is None; present and not a date is malformed, because a
    request placed at no time cannot be paged past nor scheduled (it used to be skipped
    silently)."""
    value = data.get(name)
    if value is None or value == "":
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise MalformedRequest(
            request_id, f"{label or name} is not an ISO 8601 date (got {_shown(value)})"
        )
    return parsed


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    if value in (None, ""):
        return None
    return str(value)


def _assignee(value: Any) -> str | None:
    if isinstance(value, dict):
        return _str(value.get("email")) or _str(value.get("id")) or _str(value.get("name"))
    return _str(value)


def _params(asset: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for param in _list(asset.get("params")):
        if not isinstance(param, dict) or not param.get("id"):
            continue
        value = param.get("value")
        if value in (None, "") and isinstance(param.get("structured_value"), (str, int, float)):
            value = param["structured_value"]
        # A value that is an object or a list is no parameter value: kept empty, so a subscription
        # id is never the printed form of a structure.
        scalar = isinstance(value, (str, int, float))
        out[str(param["id"])] = str(value) if scalar else ""
    return out


def _items(asset: Mapping[str, Any]) -> tuple[Item, ...]:
    items = []
    for item in _list(asset.get("items")):
        if not isinstance(item, dict) or not item.get("id"):
            continue
        items.append(
            Item(
                id=str(item["id"]),
                mpn=str(item.get("mpn") or ""),
                quantity=str(item.get("quantity", "0")),
                period=_str(item.get("period")),
                display_name=_str(item.get("display_name")),
            )
        )
    return tuple(items)


def parse_request(
    data: Mapping[str, Any], *, subscription_param: str = "subscription_id"
) -> CancelRequest:
    """Build a :class:`CancelRequest` from a Connect request payload.

    ``subscription_param`` names the fulfillment parameter that carries the vendor's
    subscription id (vendors differ; the official template uses ``subscription_id``), or is
    ``asset.external_id`` for vendors that keep their id there. There is no silent fallback from
    one to the other: the two hold different systems' ids, and the wrong one would end the wrong
    subscription.
    """
    if not isinstance(data, Mapping):
        raise MalformedRequest(None, f"expected a JSON object, got {type(data).__name__}")
    request_id = _identifier(data.get("id"))
    if not request_id:
        got = data.get("id")
        raise MalformedRequest(
            None, "no request id" if got in (None, "") else f"id is not a text (got {_shown(got)})"
        )
    created = _date_field(data, "created", request_id)
    asset = data.get("asset")
    if not isinstance(asset, dict) or not _identifier(asset.get("id")):
        raise MalformedRequest(request_id, "no asset (subscription) block with an id")
    product = _dict(asset.get("product"))
    product_id = _identifier(product.get("id"))
    if not product_id:
        raise MalformedRequest(request_id, "asset has no product id")
    connection = _dict(asset.get("connection"))
    environment = _str(connection.get("type")) or "production"
    marketplace = _dict(data.get("marketplace")) or _dict(asset.get("marketplace"))
    customer = _dict(_dict(asset.get("tiers")).get("customer"))
    params = _params(asset)
    external_id = _str(asset.get("external_id"))
    billing = _dict(asset.get("billing"))
    return CancelRequest(
        id=request_id,
        type=str(data.get("type") or ""),
        status=str(data.get("status") or ""),
        asset_id=str(asset["id"]).strip(),
        product_id=product_id,
        environment=environment,
        created=created,
        updated=parse_datetime(data.get("updated")),
        planned_date=_date_field(data, "planned_date", request_id),
        asset_status=_str(asset.get("status")),
        marketplace_id=_str(marketplace.get("id")),
        customer_id=_str(customer.get("id")),
        customer_name=_str(customer.get("name")),
        external_id=external_id,
        subscription_id=external_id
        if subscription_param == EXTERNAL_ID
        else (params.get(subscription_param) or None),
        items=_items(asset),
        params=params,
        assignee=_assignee(data.get("assignee")),
        billing_next_date=_date_field(billing, "next_date", request_id, "asset.billing.next_date"),
    )
