"""Importing Connect request objects exactly as the API returns them (and product templates).

A vendor replays yesterday's production request locally by handing the mock the JSON Connect sent
(one object, a JSON array, or JSON lines; through the seed file's ``connect_requests``, the
``--import`` option or ``POST /admin/requests``). What the request references is created, or
merged into what the store already holds: the product (parameter and item definitions taken from
the subscription, values stripped; a default approve template added to a new product), the
marketplace, the subscription (connection, contract, tiers kept verbatim), the assignee as a user.

The payload itself is kept and served back unchanged, with only what the mock later changes
applied on top (see ``verbatim.py``). All payloads are checked before any is applied, so a bad
batch changes nothing; errors name the payload and the key (``payload[1].asset.product.id:
required``).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cancel_sandbox.marketplace import factories as f
from cancel_sandbox.marketplace import objects as o
from cancel_sandbox.marketplace.checks import SeedError
from cancel_sandbox.marketplace.payloads import (
    check_request,
    need_object,
    need_string,
    parse_payloads,
    read_time,
)
from cancel_sandbox.marketplace.records import (
    OPEN_STATUSES,
    Asset,
    Product,
    Request,
    plain_asset,
    plain_request,
)
from cancel_sandbox.marketplace.store import ADMIN, Store

__all__ = ["import_requests", "import_file", "import_templates"]

# Keys of a parameter or an item that belong to one subscription, not to the definition.
_PARAM_VALUE_KEYS = ("value", "value_error", "structured_value")
_ITEM_VALUE_KEYS = ("quantity", "old_quantity")
_UNKNOWN_MARKETPLACE = {"id": "MP-00000", "name": "Unknown marketplace"}
_UNKNOWN_CONTRACT = {"id": "CRD-00000-00000-00000", "name": "None"}


def _definition(entry: dict[str, Any], drop: Iterable[str]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in drop}


def _item_definition(entry: dict[str, Any]) -> dict[str, Any]:
    definition = _definition(entry, _ITEM_VALUE_KEYS)
    definition.setdefault("mpn", entry["id"])  # the store finds items by MPN
    return definition


def _product(store: Store, ids: o.IdMaker, payload: dict[str, Any], at: Any) -> Product:
    asset = payload["asset"]
    summary = asset["product"]
    params = [_definition(p, _PARAM_VALUE_KEYS) for p in asset.get("params", [])]
    items = [_item_definition(i) for i in asset.get("items", [])]
    product = store.products.get(summary["id"])
    if product is not None:  # merge: definitions the store does not know yet are added
        known = {p["id"] for p in product.params}
        product.params.extend(p for p in params if p["id"] not in known)
        product.items.extend(i for i in items if product.item(i["mpn"]) is None)
        store.add_product(product)
        return product
    vendor = asset["connection"].get("vendor") or {"id": "VA-000-000", "name": "Unknown vendor"}
    param = next((p["id"] for p in params if p.get("phase") == "fulfillment"), "subscription_id")
    product = Product(
        id=summary["id"],
        name=str(summary.get("name") or summary["id"]),
        vendor=vendor,
        params=params,
        items=items,
        templates=[
            f.template_object(
                ids.template(),
                name="Cancellation confirmed",
                body="Subscription {{ " + param + " }} is cancelled.",
                at=at,
            )
        ],
        billing_period=None,
        created=at,
        icon=str(summary.get("icon") or ""),
        status=str(summary.get("status") or "published"),
        imported=True,
    )
    store.add_product(product)
    return product


def _asset_status(payload: dict[str, Any]) -> str:
    status = payload["asset"].get("status")
    if isinstance(status, str) and status:
        return status
    # A 2019 payload has none: derive what Connect would show for the request's state.
    if payload["type"] == "cancel" and payload["status"] in OPEN_STATUSES:
        return "terminating"
    return "processing" if payload["type"] == "purchase" else "active"


def _asset(store: Store, payload: dict[str, Any], product: Product, at: Any) -> Asset:
    raw = payload["asset"]
    existing = store.assets.get(raw["id"])
    if existing is not None:
        return existing
    created = o.parse_time(_dig(raw, "events", "created", "at")) or at
    updated = o.parse_time(_dig(raw, "events", "updated", "at")) or created
    marketplace = raw.get("marketplace") or payload.get("marketplace") or _UNKNOWN_MARKETPLACE
    if marketplace.get("id") and marketplace["id"] not in store.marketplaces:
        store.add_marketplace(copy.deepcopy(marketplace))
    asset = Asset(
        id=raw["id"],
        status=_asset_status(payload),
        product=product,
        connection=raw["connection"],
        marketplace={**marketplace, "name": marketplace.get("name") or ""},
        contract=raw.get("contract") or payload.get("contract") or _UNKNOWN_CONTRACT,
        tiers=raw.get("tiers") or {},
        external_id=str(raw.get("external_id") or ""),
        external_uid=str(raw.get("external_uid") or ""),
        items=[
            (
                str(i.get("mpn") or i["id"]),
                str(i.get("quantity", "0")),
                str(i.get("old_quantity", "0")),
            )
            for i in raw.get("items", [])
        ],
        params={p["id"]: _text(p.get("value")) for p in raw.get("params", [])},
        created=o.whole_seconds(created),
        updated=o.whole_seconds(updated),
    )
    store.add_asset(asset)
    asset.raw = copy.deepcopy(raw)
    asset.baseline = plain_asset(asset)
    return asset


def _dig(node: Any, *keys: str) -> Any:
    """A nested value, or None where a level is missing or not an object (kept as given)."""
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _user(store: Store, assignee: Any) -> dict[str, str] | None:
    """The assignee as a user of the store (text fields; the payload keeps its own shape)."""
    if not isinstance(assignee, dict):
        return None
    user = {
        "id": assignee["id"],
        "name": _text(assignee.get("name")) or assignee["id"],
        "email": _text(assignee.get("email")),
    }
    if user["id"] not in store.users:
        store.add_user(user)
    return dict(user)


def _linked_template(
    store: Store, product: Product, linked: dict[str, Any], payload: dict[str, Any], at: Any
) -> None:
    """The template a request was answered with, added to its product when unknown: its body is
    what Connect rendered (the activation key), so renders give the same text back."""
    if product.template(linked["id"]) is not None or store.taken(linked["id"]):
        return
    product.templates.append(
        f.template_object(
            linked["id"],
            name=str(linked.get("name") or linked["id"]),
            body=_text(payload.get("activation_key")),
            at=at,
        )
    )
    store.add_product(product)


def _request(store: Store, ids: o.IdMaker, payload: dict[str, Any]) -> Request:
    payload = copy.deepcopy(payload)  # the records share its parts: the caller's copy stays theirs
    # Kept at the precision the payload gives (Connect serves fractions): the request is filtered
    # and ordered by the created it is served with (see faults.CREATED_PRECISIONS).
    at = read_time(payload, "created", "payload", exact=True) or store.now()
    product = _product(store, ids, payload, at - timedelta(days=1))
    asset = _asset(store, payload, product, at)
    params = {p["id"]: _text(p.get("value")) for p in payload["asset"].get("params", [])}
    errors = {
        p["id"]: _text(p.get("value_error"))
        for p in payload["asset"].get("params", [])
        if p.get("value_error")
    }
    template = payload.get("template")
    if isinstance(template, dict) and isinstance(template.get("id"), str):
        _linked_template(store, product, template, payload, at)
    previous = payload.get("previous_approved_request")
    request = Request(
        id=payload["id"],
        type=payload["type"],
        status=payload["status"],
        asset=asset,
        created=at,
        updated=read_time(payload, "updated", "payload") or at,
        conversation_id="",
        params=params,
        param_errors=errors,
        note=_text(payload.get("note")),
        reason=_text(payload.get("reason")),
        assignee=_user(store, payload.get("assignee")),
        planned_date=read_time(payload, "planned_date", "payload"),
        effective_date=read_time(payload, "effective_date", "payload"),
        activation_key=_text(payload.get("activation_key")),
        template=template if isinstance(template, dict) else None,
        answered=bool(payload.get("answered", False)),
        previous_approved=previous.get("id") if isinstance(previous, dict) else None,
    )
    store.add_request(request)
    request.raw = copy.deepcopy(payload)
    request.baseline = plain_request(request)
    return request


def import_requests(
    store: Store, payloads: list[Any], *, actor: str, where: str = "payload"
) -> list[str]:
    """Create the requests (and what they reference); their ids. Raises SeedError, changing
    nothing, when any payload cannot be understood or its id is taken."""
    checked = [
        check_request(payload, f"{where}[{index}]") for index, payload in enumerate(payloads)
    ]
    seen: set[str] = set()
    for index, request in enumerate(checked):
        if request["id"] in store.requests or request["id"] in seen:
            raise SeedError(f"{where}[{index}].id: request {request['id']} already exists")
        seen.add(request["id"])
        asset_id = request["asset"]["id"]
        if store.taken(asset_id) and asset_id not in store.assets:
            raise SeedError(f"{where}[{index}].asset.id: {asset_id} is the id of another object")
    ids = o.IdMaker(random.Random(f"{store.seed}:import:{len(store.requests)}"), taken=store.taken)
    created = []
    with store.change():
        for request in checked:
            created.append(_request(store, ids, request).id)
            store.record(actor, "request", created[-1], "imported", after=request["status"])
    return created


def import_file(store: Store, path: str | Path) -> list[str]:
    """Import the request objects of a file (``--import``); SeedError names the file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"{source}: cannot read the file ({exc})") from None
    return import_requests(store, parse_payloads(text, str(source)), actor=ADMIN, where=str(source))


def import_templates(
    store: Store, product_id: str, payloads: list[Any], where: str = "payload"
) -> list[str]:
    """Add template objects (kept verbatim) to a product; their ids."""
    product = store.product(product_id)
    checked = []
    for index, payload in enumerate(payloads):
        here = f"{where}[{index}]"
        template = need_object(payload, here)
        assert template is not None
        need_string(template, "id", here, prefix="TL-")
        need_string(template, "name", here)
        if template.get("scope") not in ("asset", "tier1", "tier2"):
            raise SeedError(f"{here}.scope: asset, tier1 or tier2 is required")
        if template.get("type") not in ("fulfillment", "inquire", "pending", None):
            raise SeedError(f"{here}.type: fulfillment, inquire, pending or null is required")
        if product.template(template["id"]) is None and store.taken(template["id"]):
            raise SeedError(f"{here}.id: {template['id']} is the id of another object")
        checked.append(copy.deepcopy(template))
    with store.change():
        for template in checked:
            product.templates[:] = [t for t in product.templates if t["id"] != template["id"]]
            product.templates.append(template)
        store.add_product(product)
    return [t["id"] for t in checked]
