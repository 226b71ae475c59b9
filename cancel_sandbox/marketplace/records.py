"""The store's records (rendered as Connect JSON objects by render.py).

Records are slotted dataclasses that hold what is really theirs (ids, statuses, dates, parameter
values, quantities) and *reference* what they share (product, connection, accounts, marketplace,
contract). Rendering builds fresh dicts per call around those shared objects; callers treat a
rendered object as a read-only snapshot and never mutate its shared parts.

``to_doc``/``from_doc`` give the JSON documents that the optional SQLite persistence writes;
loading interns identical shared objects again, so a restored store is as compact as a generated
one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cancel_sandbox.marketplace.objects import iso, parse_time

__all__ = [
    "OPEN_STATUSES",
    "Product",
    "Asset",
    "Request",
    "Conversation",
    "Interner",
    "render_product",
    "render_asset",
    "render_request",
    "render_conversation",
    "plain_asset",
    "plain_request",
]

OPEN_STATUSES = frozenset({"draft", "tiers_setup", "pending", "inquiring", "scheduled", "revoking"})


def _time(text: Any) -> datetime | None:
    return parse_time(text)


def _moment(text: Any) -> datetime:
    """A time that a stored document must have (a broken state file fails loudly here)."""
    value = parse_time(text)
    if value is None:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    return value


class Interner:
    """Shares equal JSON objects between records restored from documents."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def __call__(self, obj: Any) -> Any:
        key = json.dumps(obj, sort_keys=True)
        return self._seen.setdefault(key, obj)


@dataclass(slots=True, eq=False)
class Product:
    id: str
    name: str
    vendor: dict[str, str]
    params: list[dict[str, Any]]  # parameter definitions, without values
    items: list[dict[str, Any]]  # item definitions, without quantities
    templates: list[dict[str, Any]]
    billing_period: str | None  # "monthly" | "yearly" | None (one-time)
    created: datetime
    icon: str = ""
    status: str = "published"
    description: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # as nested in subscriptions
    imported: bool = False  # made from a Connect payload: the generator leaves it alone

    def __post_init__(self) -> None:
        self.icon = self.icon or f"/media/{self.vendor['id']}/{self.id}/media/{self.id}-logo.png"
        self.summary = {"id": self.id, "icon": self.icon, "name": self.name, "status": self.status}

    def item(self, mpn: str) -> dict[str, Any] | None:
        return next((item for item in self.items if item["mpn"] == mpn), None)

    def template(self, template_id: str) -> dict[str, Any] | None:
        return next((t for t in self.templates if t["id"] == template_id), None)

    def approve_template(self) -> str | None:
        """The first asset/fulfillment template: the one a processor approves with."""
        return next(
            (
                str(t["id"])
                for t in self.templates
                if t.get("scope") == "asset" and t.get("type") == "fulfillment"
            ),
            None,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vendor": self.vendor,
            "params": self.params,
            "items": self.items,
            "templates": self.templates,
            "billing_period": self.billing_period,
            "created": iso(self.created),
            "icon": self.icon,
            "status": self.status,
            "description": self.description,
            "imported": self.imported,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Product:
        return cls(**{**doc, "created": _moment(doc["created"])})


@dataclass(slots=True, eq=False)
class Asset:
    """A subscription."""

    id: str
    status: str
    product: Product
    connection: dict[str, Any]
    marketplace: dict[str, Any]
    contract: dict[str, Any]
    tiers: dict[str, Any]  # {"customer": account, "tier1": account, "tier2": account | {}}
    external_id: str
    external_uid: str
    items: list[tuple[str, str, str]]  # (mpn, quantity, old_quantity); quantities are strings
    params: dict[str, str]  # parameter id → value
    created: datetime
    updated: datetime
    billing_next: datetime | None = None
    request_ids: list[str] = field(default_factory=list)
    # An imported subscription: Connect's object as given, and the mock's rendering of it then.
    raw: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "product": self.product.id,
            "connection": self.connection,
            "marketplace": self.marketplace,
            "contract": self.contract,
            "tiers": self.tiers,
            "external_id": self.external_id,
            "external_uid": self.external_uid,
            "items": [list(item) for item in self.items],
            "params": self.params,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "billing_next": iso(self.billing_next),
            "request_ids": self.request_ids,
            "raw": self.raw,
            "baseline": self.baseline,
        }

    @classmethod
    def from_doc(
        cls, doc: Mapping[str, Any], products: Mapping[str, Product], intern: Interner
    ) -> Asset:
        tiers = {name: intern(account) for name, account in doc["tiers"].items()}
        return cls(
            id=doc["id"],
            status=doc["status"],
            product=products[doc["product"]],
            connection=intern(doc["connection"]),
            marketplace=intern(doc["marketplace"]),
            contract=intern(doc["contract"]),
            tiers=intern(tiers),
            external_id=doc["external_id"],
            external_uid=doc["external_uid"],
            items=[(str(mpn), str(quantity), str(old)) for mpn, quantity, old in doc["items"]],
            params=dict(doc["params"]),
            created=_moment(doc["created"]),
            updated=_moment(doc["updated"]),
            billing_next=_time(doc["billing_next"]),
            request_ids=list(doc["request_ids"]),
            raw=doc.get("raw"),
            baseline=doc.get("baseline"),
        )


@dataclass(slots=True, eq=False)
class Request:
    id: str
    type: str  # purchase | change | suspend | resume | cancel
    status: str
    asset: Asset
    created: datetime
    updated: datetime
    conversation_id: str
    params: dict[str, str] = field(default_factory=dict)  # values set on this request
    param_errors: dict[str, str] = field(default_factory=dict)
    note: str = ""
    reason: str = ""
    assignee: dict[str, str] | None = None
    planned_date: datetime | None = None
    effective_date: datetime | None = None
    activation_key: str = ""
    template: dict[str, str] | None = None  # {"id", "name"} of the template it was answered with
    answered: bool = False
    previous_approved: str | None = None
    # An imported request: Connect's object as given, and the mock's rendering of it then.
    raw: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None

    def param(self, param_id: str) -> str:
        return self.params.get(param_id, self.asset.params.get(param_id, ""))

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "asset": self.asset.id,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "conversation_id": self.conversation_id,
            "params": self.params,
            "param_errors": self.param_errors,
            "note": self.note,
            "reason": self.reason,
            "assignee": self.assignee,
            "planned_date": iso(self.planned_date),
            "effective_date": iso(self.effective_date),
            "activation_key": self.activation_key,
            "template": self.template,
            "answered": self.answered,
            "previous_approved": self.previous_approved,
            "raw": self.raw,
            "baseline": self.baseline,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], assets: Mapping[str, Asset]) -> Request:
        values = dict(doc)
        values["asset"] = assets[doc["asset"]]
        for name in ("created", "updated", "planned_date", "effective_date"):
            values[name] = _time(doc[name])
        return cls(**values)


@dataclass(slots=True, eq=False)
class Conversation:
    """A request's conversation; messages are kept as rendered objects (they never change)."""

    id: str
    instance_id: str
    topic: str
    created: datetime
    creator: dict[str, str]
    accounts: list[dict[str, str]]
    messages: list[dict[str, Any]] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance_id": self.instance_id,
            "topic": self.topic,
            "created": iso(self.created),
            "creator": self.creator,
            "accounts": self.accounts,
            "messages": self.messages,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], intern: Interner) -> Conversation:
        return cls(
            id=doc["id"],
            instance_id=doc["instance_id"],
            topic=doc["topic"],
            created=_moment(doc["created"]),
            creator=intern(doc["creator"]),
            accounts=intern(doc["accounts"]),
            messages=list(doc["messages"]),
        )


# Rendering lives in render.py; re-exported here, where callers have always found it.
from cancel_sandbox.marketplace.render import (  # noqa: E402 - after the records it renders
    plain_asset,
    plain_request,
    render_asset,
    render_conversation,
    render_product,
    render_request,
)
