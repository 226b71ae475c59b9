"""Building subscriptions and requests from the shared catalog (for the generator and seed files).

:class:`Catalog` holds the shared objects new subscriptions reference — one connection per
(product, marketplace, environment), one contract per (marketplace, environment), a few resellers
per marketplace, the known customers — rebuilt from the store at the start of each seeding round so
that later rounds reuse, rather than duplicate, what earlier ones created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cancel_sandbox.marketplace import factories as f
from cancel_sandbox.marketplace.actions import render_template
from cancel_sandbox.marketplace.objects import IdMaker
from cancel_sandbox.marketplace.objects import request_id as new_request_id
from cancel_sandbox.marketplace.records import Asset, Product, Request
from cancel_sandbox.marketplace.store import Store

__all__ = ["Catalog", "new_subscription", "new_request"]


@dataclass
class Catalog:
    """Shared objects reused across subscriptions, rebuilt from the store for each round."""

    ids: IdMaker
    provider: dict[str, str]
    hub: dict[str, str]
    connections: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    contracts: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    resellers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    customers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, store: Store, ids: IdMaker) -> Catalog:
        provider, hub = None, None
        catalog_parts: dict[str, Any] = {
            "connections": {},
            "contracts": {},
            "resellers": {},
            "customers": {},
        }
        for asset in store.assets.values():
            env, mp = asset.connection["type"], asset.marketplace["id"]
            catalog_parts["connections"].setdefault((asset.product.id, mp, env), asset.connection)
            catalog_parts["contracts"].setdefault((mp, env), asset.contract)
            tier1 = asset.tiers.get("tier1")
            if tier1:
                catalog_parts["resellers"].setdefault(mp, {})[tier1["id"]] = tier1
            customer = asset.tiers.get("customer")
            if customer:
                catalog_parts["customers"][customer["id"]] = customer
            if env != "preview":  # imported connections may lack either
                provider = asset.connection.get("provider") or provider
                hub = asset.connection.get("hub") or hub
        provider = provider or {"id": ids.provider(), "name": "Local Provider"}
        hub = hub or {"id": ids.hub(), "name": "Local Hub"}
        return cls(
            ids,
            provider,
            hub,
            catalog_parts["connections"],
            catalog_parts["contracts"],
            {mp: list(accounts.values()) for mp, accounts in catalog_parts["resellers"].items()},
            list(catalog_parts["customers"].values()),
        )

    def connection(self, product: Product, marketplace_id: str, environment: str) -> dict[str, Any]:
        key = (product.id, marketplace_id, environment)
        if key not in self.connections:
            self.connections[key] = f.connection(
                self.ids, environment, provider=self.provider, vendor=product.vendor, hub=self.hub
            )
        return self.connections[key]

    def contract(self, marketplace_id: str, environment: str) -> dict[str, str]:
        if environment == "preview":
            return f.PREVIEW_CONTRACT
        key = (marketplace_id, environment)
        if key not in self.contracts:
            self.contracts[key] = {
                "id": self.ids.contract(),
                "name": f"Distribution contract {marketplace_id}",
            }
        return self.contracts[key]

    def reseller(self, marketplace_id: str) -> dict[str, Any]:
        pool = self.resellers.setdefault(marketplace_id, [])
        if len(pool) < 3:
            pool.append(f.account(self.ids, scope="reseller"))
        return self.ids.rng.choice(pool)


def new_subscription(
    store: Store,
    catalog: Catalog,
    *,
    product: Product,
    marketplace: dict[str, Any],
    environment: str,
    customer: dict[str, Any],
    status: str,
    created: datetime,
    subscription_id: str | None,
    items: list[tuple[str, str, str]] | None = None,
    external_id: str | None = None,
    asset_id: str | None = None,
) -> Asset:
    rng = catalog.ids.rng
    if items is None:
        item = rng.choice(product.items)
        quantity = (
            "unlimited" if item["item_type"] == "PPU" else str(rng.choice((1, 1, 2, 5, 10, 25, 50)))
        )
        items = [(item["mpn"], quantity, "0")]
    params = (
        {product.params[0]["id"]: subscription_id} if subscription_id and product.params else {}
    )
    billing_next = None
    if product.billing_period and status != "terminated":
        horizon = 28 if product.billing_period == "monthly" else 330
        billing_next = store.now().replace(hour=0, minute=0, second=0) + timedelta(
            days=rng.randint(1, horizon)
        )
    asset = Asset(
        id=asset_id or catalog.ids.asset(),
        status=status,
        product=product,
        connection=catalog.connection(product, marketplace["id"], environment),
        marketplace=marketplace,
        contract=catalog.contract(marketplace["id"], environment),
        tiers={"customer": customer, "tier1": catalog.reseller(marketplace["id"]), "tier2": {}},
        external_id=external_id or str(rng.randrange(100000, 999999)),
        external_uid=catalog.ids.uid(),
        items=items,
        params=params,
        created=created,
        updated=created,
        billing_next=billing_next,
    )
    store.add_asset(asset)
    return asset


def new_request(
    store: Store,
    asset: Asset,
    *,
    type_: str,
    status: str,
    created: datetime,
    number: int,
    params: dict[str, str] | None = None,
    planned_date: datetime | None = None,
    reason: str = "",
    request_id: str | None = None,
) -> Request:
    request = Request(
        id=request_id or new_request_id(asset.id, number),
        type=type_,
        status=status,
        asset=asset,
        created=created,
        updated=created,
        conversation_id="",
        params=dict(params or {}),
        planned_date=planned_date,
        reason=reason,
    )
    if status == "approved":
        templates = [
            t
            for t in asset.product.templates
            if t.get("scope") == "asset" and t.get("type") == "fulfillment"
        ]
        template = templates[-1] if type_ == "purchase" else templates[0]
        request.template = {"id": template["id"], "name": template["name"]}
        request.activation_key = render_template(template.get("body") or "", request)
        request.effective_date = created
    store.add_request(request)
    return request
