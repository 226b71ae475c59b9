"""The typed, read-only view of a Connect cancel request that the engine works with.

Real payloads are irregular (see the contract test over public fixtures): optional blocks go
missing, ``assignee`` is ``""`` or an object, quantities are strings ("unlimited" included),
2019-era requests lack ``asset.marketplace``. Parsing is tolerant of all of that; what the engine
cannot work with at all (no id, no asset) raises :class:`MalformedRequest`, which the engine turns
into a recorded outcome instead of an exception that stops the loop.

Limits (the second half of the boundary :mod:`processor.marketplace.boundary` begins):

- ids follow Connect's grammar for their kind (:func:`processor.urls.connect_id_problem`: ``PR-``
  for the request, ``AS-`` the asset, ``PRD-`` the product, ``MP-`` the marketplace); a request
  id that does not is malformed *without* an id (nothing on Connect can be addressed with it: it is
  logged and counted, never acted on); the other ids make the request malformed;
- the subscription id (and ``asset.external_id``, the customer id) are kept exactly or refused:
  at most :data:`MAX_VENDOR_ID_CHARS` characters, no control character. The adapter's own rule
  (:mod:`processor.urls`) is checked before any vendor call;
- customer text (parameter values: the cancellation comment, reasons) loses its control
  characters and is cut at :data:`MAX_PARAM_CHARS` with :data:`TRUNCATED` at the end; other
  descriptive texts (names, statuses, MPNs) at :data:`MAX_TEXT_CHARS`;
- numbers are finite: a parameter or quantity that is ``NaN``, infinite, a boolean or a structure
  is no value (empty);
- at most :data:`MAX_PARAMS` parameters and :data:`MAX_ITEMS` items, or the request is malformed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from processor import json_text
from processor.urls import connect_id_problem

__all__ = [
    "CancelRequest",
    "Item",
    "MalformedRequest",
    "parse_request",
    "parse_datetime",
    "ENVIRONMENTS",
    "EXTERNAL_ID",
    "MAX_PARAM_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_VENDOR_ID_CHARS",
    "TRUNCATED",
    "UNREADABLE",
    "admitted",
    "customer_text",
]

ENVIRONMENTS = ("preview", "test", "production")
EXTERNAL_ID = "asset.external_id"

MAX_VENDOR_ID_CHARS = 256
MAX_PARAM_CHARS = 4000
MAX_TEXT_CHARS = 1000
MAX_PARAMS = 500
MAX_ITEMS = 1000
TRUNCATED = "…[truncated]"
# The key of what the listing yields for a request Connect sent in a form no reader accepts (a
# NaN, a duplicate key, nesting past the cap): its id, read leniently, and why it was refused
# (processor.marketplace.paging). Such a request is malformed, for that reason.
UNREADABLE = "processor.unreadable"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")  # lone halves too


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
    text = _CONTROL.sub("?", repr(value)[:200])
    return text if len(text) <= 40 else text[:37] + "..."


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def admitted(payload: Any) -> Any:
    """A request payload that did not come through the Connect boundary (the EaaS runner parses
    its websocket messages itself), put through the same JSON rules
    (:mod:`processor.json_text`: no NaN, bounded nesting and size, no long integers, whole
    characters), so both ways in deliver the same forms. One that breaks them comes out as what
    the listing yields for such a row: its id (when it is one) and why, which the engine records
    as malformed, never acts on."""
    try:
        return json_text.parse(json.dumps(payload, allow_nan=True).encode("utf-8", "replace"))
    except (json_text.Refused, TypeError, ValueError, RecursionError) as exc:
        why = str(exc) if isinstance(exc, json_text.Refused) else type(exc).__name__
        found = payload.get("id") if isinstance(payload, Mapping) else None
        request_id = found if connect_id_problem("request", found) is None else None
        return {"id": request_id, UNREADABLE: why}


def customer_text(value: str, limit: int = MAX_PARAM_CHARS) -> str:
    """Text a customer typed, as it may travel on: control characters (line breaks included)
    become one space, and more than ``limit`` characters are cut, ending with :data:`TRUNCATED`."""
    text = _CONTROL.sub(" ", value) if _CONTROL.search(value) else value
    if len(text) <= limit:
        return text
    return text[: max(limit - len(TRUNCATED), 0)] + TRUNCATED


def _scalar(value: Any) -> str | None:
    """A JSON scalar as text: strings as they are, integers, finite floats; None for a boolean,
    a structure, ``NaN`` or an infinity (no value a vendor or a date can use)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _str(value: Any) -> str | None:
    text = _scalar(value)
    if text in (None, ""):
        return None
    return customer_text(text, MAX_TEXT_CHARS)


def _vendor_id(value: Any, what: str, request_id: str) -> str | None:
    """An id of the vendor's or the customer's, kept exactly or refused: never cut nor cleaned,
    because an id cut short is another id."""
    text = _scalar(value)
    if text in (None, ""):
        return None
    if len(text) > MAX_VENDOR_ID_CHARS:
        raise MalformedRequest(
            request_id, f"{what} is longer than {MAX_VENDOR_ID_CHARS} characters ({len(text)})"
        )
    if _CONTROL.search(text):
        raise MalformedRequest(request_id, f"{what} {_shown(text)} holds a control character")
    return text


def _assignee(value: Any) -> str | None:
    if isinstance(value, dict):
        return _str(value.get("email")) or _str(value.get("id")) or _str(value.get("name"))
    return _str(value)


def _raw_params(asset: Mapping[str, Any], request_id: str) -> dict[str, str]:
    """Parameter values as sent (scalars only), before any cut: the subscription id is taken
    from here, exactly."""
    params = _list(asset.get("params"))
    if len(params) > MAX_PARAMS:
        raise MalformedRequest(request_id, f"more than {MAX_PARAMS} parameters")
    out: dict[str, str] = {}
    for param in params:
        if not isinstance(param, dict):
            continue
        name = _scalar(param.get("id"))
        if not name or len(name) > MAX_TEXT_CHARS:
            continue
        value = _scalar(param.get("value"))
        if value in (None, ""):
            value = _scalar(param.get("structured_value"))
        # A value that is an object, a list or not finite is no parameter value: kept empty, so a
        # subscription id is never the printed form of a structure (nor "inf").
        out[name] = value or ""
    return out


def _items(asset: Mapping[str, Any], request_id: str) -> tuple[Item, ...]:
    listed = _list(asset.get("items"))
    if len(listed) > MAX_ITEMS:
        raise MalformedRequest(request_id, f"more than {MAX_ITEMS} items")
    items = []
    for item in listed:
        if not isinstance(item, dict) or not _str(item.get("id")):
            continue
        quantity = item.get("quantity", "0")
        if _scalar(quantity) is None:
            raise MalformedRequest(
                request_id, f"item quantity is not a finite number or text (got {_shown(quantity)})"
            )
        items.append(
            Item(
                id=str(_str(item["id"])),
                mpn=_str(item.get("mpn")) or "",
                quantity=customer_text(str(_scalar(quantity)), MAX_TEXT_CHARS),
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
    got = data.get("id")
    if got in (None, ""):
        raise MalformedRequest(None, "no request id")
    problem = connect_id_problem("request", got)
    if problem is not None:
        # No id to act on: a request id that is no Connect id would address another path (or
        # nothing), so the request is recorded without one and never acted on.
        raise MalformedRequest(None, f"request id {problem}")
    request_id = str(got)
    refused = data.get(UNREADABLE)
    if refused is not None:
        why = f"Connect sent it in a form that cannot be read: {refused}"
        raise MalformedRequest(request_id, why)
    created = _date_field(data, "created", request_id)
    asset = data.get("asset")
    if not isinstance(asset, dict) or asset.get("id") in (None, ""):
        raise MalformedRequest(request_id, "no asset (subscription) block with an id")
    _connect_id(request_id, "asset", asset.get("id"))
    product = _dict(asset.get("product"))
    if product.get("id") in (None, ""):
        raise MalformedRequest(request_id, "asset has no product id")
    product_id = _connect_id(request_id, "product", product.get("id"))
    connection = _dict(asset.get("connection"))
    environment = _str(connection.get("type")) or "production"
    marketplace = _dict(data.get("marketplace")) or _dict(asset.get("marketplace"))
    marketplace_id = None
    if marketplace.get("id") not in (None, ""):
        marketplace_id = _connect_id(request_id, "marketplace", marketplace.get("id"))
    customer = _dict(_dict(asset.get("tiers")).get("customer"))
    raw = _raw_params(asset, request_id)
    params = {name: customer_text(value) for name, value in raw.items()}
    external_id = _vendor_id(asset.get("external_id"), "asset.external_id", request_id)
    if subscription_param == EXTERNAL_ID:
        subscription_id = external_id
    else:
        subscription_id = _vendor_id(
            raw.get(subscription_param), f"parameter {subscription_param}", request_id
        )
    billing = _dict(asset.get("billing"))
    return CancelRequest(
        id=request_id,
        type=_str(data.get("type")) or "",
        status=_str(data.get("status")) or "",
        asset_id=str(asset["id"]),
        product_id=product_id,
        environment=environment,
        created=created,
        updated=parse_datetime(data.get("updated")),
        planned_date=_date_field(data, "planned_date", request_id),
        asset_status=_str(asset.get("status")),
        marketplace_id=marketplace_id,
        customer_id=_vendor_id(customer.get("id"), "customer id", request_id),
        customer_name=_str(customer.get("name")),
        external_id=external_id,
        subscription_id=subscription_id,
        items=_items(asset, request_id),
        params=params,
        assignee=_assignee(data.get("assignee")),
        billing_next_date=_date_field(billing, "next_date", request_id, "asset.billing.next_date"),
    )


def _connect_id(request_id: str, kind: str, value: Any) -> str:
    problem = connect_id_problem(kind, value)
    if problem is not None:
        raise MalformedRequest(request_id, f"{kind} id {problem}")
    return str(value)
