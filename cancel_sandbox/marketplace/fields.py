"""What each collection can be filtered, ordered and selected by.

Every filter field reads the store's records directly (no rendering), so even a filter the index
cannot answer scans at roughly a microsecond per record. A field missing from these tables is an
unknown field: the API answers 400, as Connect does, instead of an empty page that would hide a
typo in a processor's query.
"""

from __future__ import annotations

from typing import Any

from cancel_sandbox.marketplace.objects import parse_time, whole_seconds
from cancel_sandbox.marketplace.records import Request
from cancel_sandbox.marketplace.rql import Field

__all__ = [
    "REQUEST_FIELDS",
    "SECOND_REQUEST_FIELDS",
    "MINUTE_REQUEST_FIELDS",
    "REQUEST_SELECTABLE",
    "ASSET_FIELDS",
    "ASSET_SELECTABLE",
    "CONVERSATION_FIELDS",
    "MESSAGE_FIELDS",
    "TEMPLATE_FIELDS",
]


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _asset_fields(prefix: str, asset_of: Any) -> dict[str, Field]:
    """Fields of a subscription, as reached from a request (``asset.``) or directly (``""``)."""

    def a(path: str, getter: Any, kind: str = "str", many: bool = False) -> tuple[str, Field]:
        return prefix + path, Field(lambda record: getter(asset_of(record)), kind, many)

    return dict(
        [
            a("id", lambda x: x.id),
            a("status", lambda x: x.status),
            a("external_id", lambda x: x.external_id),
            a("external_uid", lambda x: x.external_uid),
            a("product.id", lambda x: x.product.id),
            a("product.name", lambda x: x.product.name),
            a("connection.id", lambda x: x.connection["id"]),
            a("connection.type", lambda x: x.connection["type"]),
            a("connection.provider.id", lambda x: _get(x.connection, "provider", "id")),
            a("connection.vendor.id", lambda x: _get(x.connection, "vendor", "id")),
            a("connection.hub.id", lambda x: _get(x.connection, "hub", "id")),
            a("marketplace.id", lambda x: x.marketplace["id"]),
            a("marketplace.name", lambda x: x.marketplace["name"]),
            a("contract.id", lambda x: x.contract["id"]),
            a("tiers.customer.id", lambda x: _get(x.tiers, "customer", "id")),
            a("tiers.customer.name", lambda x: _get(x.tiers, "customer", "name")),
            a("tiers.customer.external_id", lambda x: _get(x.tiers, "customer", "external_id")),
            a("tiers.tier1.id", lambda x: _get(x.tiers, "tier1", "id")),
            a("tiers.tier2.id", lambda x: _get(x.tiers, "tier2", "id")),
            a(
                "items.id",
                lambda x: [
                    x.product.item(mpn)["id"] if x.product.item(mpn) else mpn
                    for mpn, _q, _o in x.items
                ],
                many=True,
            ),
            a("items.mpn", lambda x: [mpn for mpn, _q, _o in x.items], many=True),
            a("params.id", lambda x: [p["id"] for p in x.product.params], many=True),
            a(
                "params.value",
                lambda x: [x.params.get(p["id"], "") for p in x.product.params],
                many=True,
            ),
            a("created", lambda x: x.created, "time"),
            a("updated", lambda x: x.updated, "time"),
            a("events.created.at", lambda x: x.created, "time"),
            a("events.updated.at", lambda x: x.updated, "time"),
        ]
    )


def _request_fields() -> dict[str, Field]:
    def assignee(request: Request, key: str) -> str | None:
        return request.assignee.get(key) if request.assignee else None

    fields = {
        "id": Field(lambda r: r.id),
        "type": Field(lambda r: r.type),
        "status": Field(lambda r: r.status),
        "note": Field(lambda r: r.note),
        "reason": Field(lambda r: r.reason),
        "answered": Field(lambda r: r.answered, "bool"),
        "created": Field(lambda r: r.created, "time"),
        "updated": Field(lambda r: r.updated, "time"),
        "events.created.at": Field(lambda r: r.created, "time"),
        "events.updated.at": Field(lambda r: r.updated, "time"),
        "planned_date": Field(lambda r: r.planned_date, "time"),
        "effective_date": Field(lambda r: r.effective_date, "time"),
        "assignee": Field(lambda r: assignee(r, "email")),
        "assignee.id": Field(lambda r: assignee(r, "id")),
        "assignee.email": Field(lambda r: assignee(r, "email")),
        "marketplace.id": Field(lambda r: r.asset.marketplace["id"]),
        "marketplace.name": Field(lambda r: r.asset.marketplace["name"]),
        "contract.id": Field(lambda r: r.asset.contract["id"]),
        "asset.params.value": Field(
            lambda r: [r.param(p["id"]) for p in r.asset.product.params], many=True
        ),
    }
    nested = _asset_fields("asset.", lambda r: r.asset)
    nested.pop("asset.params.value")  # a request shows its own values over the subscription's
    return {**nested, **fields}


REQUEST_FIELDS: dict[str, Field] = _request_fields()
# The fault ``created_precision: compare_seconds``: a request's created read at whole seconds (the
# value in the query is compared as given), so rows served with fractions may sort before a cursor
# taken from one of them.
SECOND_REQUEST_FIELDS: dict[str, Field] = {
    **REQUEST_FIELDS,
    "created": Field(lambda r: whole_seconds(r.created), "time"),
    "events.created.at": Field(lambda r: whole_seconds(r.created), "time"),
}
# ``created_precision: compare_minutes``: the same at whole minutes.
MINUTE_REQUEST_FIELDS: dict[str, Field] = {
    **REQUEST_FIELDS,
    "created": Field(lambda r: whole_seconds(r.created).replace(second=0), "time"),
    "events.created.at": Field(lambda r: whole_seconds(r.created).replace(second=0), "time"),
}
REQUEST_SELECTABLE = (
    "id",
    "type",
    "note",
    "reason",
    "status",
    "created",
    "updated",
    "answered",
    "assignee",
    "activation_key",
    "previous_approved_request",
    "effective_date",
    "planned_date",
    "events",
    "marketplace",
    "contract",
    "asset",
    "template",
)

ASSET_FIELDS: dict[str, Field] = _asset_fields("", lambda asset: asset)
ASSET_SELECTABLE = (
    "id",
    "status",
    "external_id",
    "external_uid",
    "product",
    "connection",
    "events",
    "items",
    "params",
    "tiers",
    "configuration",
    "marketplace",
    "contract",
    "billing",
)

CONVERSATION_FIELDS: dict[str, Field] = {
    "id": Field(lambda c: c.id),
    "instance_id": Field(lambda c: c.instance_id),
    "topic": Field(lambda c: c.topic),
    "type": Field(lambda c: "conversation"),
    "status": Field(lambda c: "open"),
    "created": Field(lambda c: c.created, "time"),
}


# Messages and templates are small: they are filtered as their rendered dicts.
def _key(name: str) -> Field:
    return Field(lambda doc: doc.get(name))


MESSAGE_FIELDS: dict[str, Field] = {name: _key(name) for name in ("id", "type", "text")}
MESSAGE_FIELDS["created"] = Field(lambda m: parse_time(m.get("created")), "time")
MESSAGE_FIELDS["account.id"] = Field(lambda m: _get(m, "account", "id"))
MESSAGE_FIELDS["creator.id"] = Field(lambda m: _get(m, "creator", "id"))

TEMPLATE_FIELDS: dict[str, Field] = {
    name: _key(name) for name in ("id", "name", "title", "scope", "type")
}
