"""How each record is rendered as a Connect JSON object.

Rendering builds fresh dicts per call around the shared objects records reference; callers treat
a rendered object as a read-only snapshot and never mutate its shared parts. An imported record
(``raw`` set) is Connect's own object with the mock's later changes applied (verbatim.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cancel_sandbox.marketplace.objects import iso
from cancel_sandbox.marketplace.verbatim import overlay

if TYPE_CHECKING:
    from cancel_sandbox.marketplace.records import Asset, Conversation, Product, Request

__all__ = [
    "render_product",
    "render_asset",
    "render_request",
    "render_conversation",
    "plain_asset",
    "plain_request",
]


def _events(created: datetime, updated: datetime) -> dict[str, Any]:
    return {"created": {"at": iso(created)}, "updated": {"at": iso(updated)}}


def render_product(product: Product) -> dict[str, Any]:
    stamp = {"at": iso(product.created)}
    return {
        **product.summary,
        "description": product.description,
        "owner": product.vendor,
        "version": 1,
        "category": {"id": "CAT-00012", "name": "Software"},
        "events": {"created": stamp, "updated": stamp},
    }


def _items(asset: Asset) -> list[dict[str, Any]]:
    out = []
    for mpn, quantity, old_quantity in asset.items:
        definition = asset.product.item(mpn) or {"id": mpn, "mpn": mpn}
        out.append({**definition, "quantity": quantity, "old_quantity": old_quantity})
    return out


def _params(
    product: Product,
    values: Mapping[str, str],
    fallback: Mapping[str, str],
    errors: Mapping[str, str],
) -> list[dict[str, Any]]:
    return [
        {
            **definition,
            "value": values.get(definition["id"], fallback.get(definition["id"], "")),
            "value_error": errors.get(definition["id"], ""),
        }
        for definition in product.params
    ]


def render_asset(asset: Asset, request: Request | None = None) -> dict[str, Any]:
    """The subscription: alone (``GET /assets/{id}``) or as nested in ``request``, whose own
    parameter values (a cancel's reason, values set by ``PUT``) show over the subscription's.
    An imported subscription, alone, is Connect's object with the mock's changes applied."""
    doc = plain_asset(asset, request)
    if request is None and asset.raw is not None:
        return overlay(asset.raw, asset.baseline, doc)  # type: ignore[no-any-return]
    return doc


def plain_asset(asset: Asset, request: Request | None = None) -> dict[str, Any]:
    """The mock's own rendering of a subscription (what :func:`render_asset` starts from)."""
    if request is None:
        params = _params(asset.product, asset.params, {}, {})
    else:
        params = _params(asset.product, request.params, asset.params, request.param_errors)
    doc: dict[str, Any] = {
        "id": asset.id,
        "status": asset.status,
        "external_id": asset.external_id,
        "external_uid": asset.external_uid,
        "product": asset.product.summary,
        "connection": asset.connection,
        "events": _events(asset.created, asset.updated),
        "items": _items(asset),
        "params": params,
        "tiers": asset.tiers,
        "configuration": {"params": []},
        "marketplace": asset.marketplace,
        "contract": asset.contract,
    }
    if asset.billing_next is not None and asset.product.billing_period:
        doc["billing"] = {
            "period": {"delta": 1, "uom": asset.product.billing_period},
            "next_date": iso(asset.billing_next),
            "anniversary": {"day": asset.created.day},
        }
    return doc


def render_request(request: Request) -> dict[str, Any]:
    """The request; an imported one is Connect's object with the mock's changes applied."""
    doc = plain_request(request)
    if request.raw is not None:
        return overlay(request.raw, request.baseline, doc)  # type: ignore[no-any-return]
    return doc


def plain_request(request: Request) -> dict[str, Any]:
    """The mock's own rendering of a request (what :func:`render_request` starts from)."""
    asset = request.asset
    doc: dict[str, Any] = {
        "id": request.id,
        "type": request.type,
        "note": request.note,
        "reason": request.reason,
        "status": request.status,
        "created": iso(request.created),
        "updated": iso(request.updated),
        "answered": request.answered,
        "assignee": request.assignee or "",
        "activation_key": request.activation_key,
        "previous_approved_request": (
            {"id": request.previous_approved} if request.previous_approved else None
        ),
        "effective_date": iso(request.effective_date),
        "planned_date": iso(request.planned_date),
        "events": _events(request.created, request.updated),
        "marketplace": asset.marketplace,
        "contract": asset.contract,
        "asset": plain_asset(asset, request),
    }
    if request.template is not None:
        doc["template"] = request.template
    return doc


def render_conversation(conversation: Conversation) -> dict[str, Any]:
    stamp = {"at": iso(conversation.created), "by": conversation.creator}
    return {
        "id": conversation.id,
        "instance_id": conversation.instance_id,
        "topic": conversation.topic,
        "type": "conversation",
        "status": "open",
        "created": iso(conversation.created),
        "creator": conversation.creator,
        "accounts": conversation.accounts,
        "events": {"created": stamp, "updated": stamp},
    }
