"""Seeding the marketplace from a YAML or JSON file (format: ``config/seed.example.yaml``).

Top-level keys, all optional: ``vendor``, ``users``, ``marketplaces``, ``products``,
``customers``, ``subscriptions``, ``requests``, ``connect_requests`` (request objects exactly as
Connect's API returns them, imported by ``imports.py``), ``connect_templates`` (``{product id:
[template objects]}``), ``generate``. Products and marketplaces named in the file are used
as given; anything a subscription or request leaves out (connections, resellers, contracts,
external ids, dates) is filled in deterministically from the seed. A file without products gets
the default catalog; ``generate: {count: N}`` adds N generated pending cancels on top.

Errors name the entry and the key (``subscriptions[2].product: unknown product PRD-...``) and
raise :class:`SeedError` before the server starts; a half-applied seed never serves requests.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from cancel_sandbox.marketplace import factories as f
from cancel_sandbox.marketplace import objects as o
from cancel_sandbox.marketplace.builders import Catalog, new_request, new_subscription
from cancel_sandbox.marketplace.checks import SeedError, choice, mapping, sequence, text
from cancel_sandbox.marketplace.generate import ensure_catalog, generate
from cancel_sandbox.marketplace.imports import import_requests, import_templates
from cancel_sandbox.marketplace.payloads import parse_payloads
from cancel_sandbox.marketplace.records import Product
from cancel_sandbox.marketplace.store import ADMIN, Store

__all__ = ["SeedError", "load_seed_file", "apply_seed"]


def load_seed_file(path: str | Path) -> dict[str, Any]:
    """The seed mapping; a file that holds Connect request objects instead (one, a JSON array,
    or JSON lines in a ``.jsonl``/``.ndjson`` file) is read as ``{"connect_requests": [...]}``."""
    source = Path(path)
    try:
        raw = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"{source}: cannot read the seed file ({exc.strerror})") from None
    if source.suffix in (".jsonl", ".ndjson"):
        return {"connect_requests": parse_payloads(raw, str(source))}
    try:
        data = json.loads(raw) if source.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise SeedError(
            f"{source}: not valid {'JSON' if source.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if data is None:
        return {}
    if isinstance(data, list) or (isinstance(data, dict) and _is_connect_request(data)):
        return {"connect_requests": data if isinstance(data, list) else [data]}
    if not isinstance(data, dict):
        raise SeedError(f"{source}: the top level must be a mapping")
    return data


def _is_connect_request(data: dict[str, Any]) -> bool:
    return str(data.get("id", "")).startswith("PR-") and isinstance(data.get("asset"), dict)


def _product(
    entry: dict[str, Any], where: str, ids: o.IdMaker, vendor: dict[str, str], at: Any
) -> Product:
    product_id = text(entry, "id", where, default=None) or ids.product()
    name = text(entry, "name", where)
    period = choice(entry, "billing_period", where, ("monthly", "yearly", None), default=None)
    param = text(entry, "subscription_param", where, default="subscription_id")
    items = []
    for number, item in enumerate(sequence(entry, "items", where, default=[]), start=1):
        item_where = f"{where}.items[{number - 1}]"
        item = mapping(item, item_where)
        items.append(
            f.item_definition(
                product_id,
                number,
                mpn=text(item, "mpn", item_where),
                display_name=text(item, "name", item_where, default=item.get("mpn")),
                period=text(item, "period", item_where, default="Monthly"),
                item_type=text(item, "item_type", item_where, default="Reservation"),
            )
        )
    if not items:
        raise SeedError(f"{where}.items: a product needs at least one item")
    templates = []
    for number, template in enumerate(sequence(entry, "templates", where, default=[])):
        t_where = f"{where}.templates[{number}]"
        template = mapping(template, t_where)
        templates.append(
            f.template_object(
                text(template, "id", t_where, default=None) or ids.template(),
                name=text(template, "name", t_where),
                body=text(template, "body", t_where, default=""),
                scope=choice(
                    template, "scope", t_where, ("asset", "tier1", "tier2"), default="asset"
                ),
                type_=choice(
                    template,
                    "type",
                    t_where,
                    ("fulfillment", "inquire", "pending", None),
                    default="fulfillment",
                ),
                at=at,
                position=100 * (number + 1),
            )
        )
    if not any(t["scope"] == "asset" and t["type"] == "fulfillment" for t in templates):
        templates.insert(
            0,
            f.template_object(
                ids.template(),
                name="Cancellation confirmed",
                body="Subscription {{ " + param + " }} is cancelled.",
                at=at,
            ),
        )
    return Product(
        id=product_id,
        name=name,
        vendor=vendor,
        params=f.param_definitions(param),
        items=items,
        templates=templates,
        billing_period=period,
        created=at,
        description=text(entry, "description", where, default=""),
    )


def apply_seed(store: Store, data: dict[str, Any], *, seed: int) -> list[str]:
    """Apply a parsed seed file; the ids of the requests it created (generated ones included)."""
    try:
        return _apply(store, data, seed)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SeedError):
            raise
        raise SeedError(str(exc)) from None


def _apply(store: Store, data: dict[str, Any], seed: int) -> list[str]:
    known = {
        "vendor",
        "marketplaces",
        "products",
        "customers",
        "subscriptions",
        "requests",
        "generate",
        "users",
        "connect_requests",
        "connect_templates",
    }
    unknown = set(data) - known
    if unknown:
        raise SeedError(
            f"unknown top-level key(s): {', '.join(sorted(unknown))} (expected "
            f"{', '.join(sorted(known))})"
        )
    ids = o.IdMaker(random.Random(f"{seed}:file"), taken=store.taken)
    now = store.now()
    created_ids: list[str] = []
    with store.change():
        vendor_entry = mapping(data.get("vendor") or {}, "vendor")
        vendor = {
            "id": text(vendor_entry, "id", "vendor", default=None) or ids.vendor(),
            "name": text(vendor_entry, "name", "vendor", default="Local Vendor Inc"),
        }
        for index, entry in enumerate(sequence(data, "marketplaces", "", default=[])):
            entry = mapping(entry, f"marketplaces[{index}]")
            store.add_marketplace(
                f.marketplace_object(
                    text(entry, "id", f"marketplaces[{index}]", default=None) or ids.marketplace(),
                    text(entry, "name", f"marketplaces[{index}]"),
                )
            )
        for index, entry in enumerate(sequence(data, "users", "", default=[])):
            where = f"users[{index}]"
            entry = mapping(entry, where)
            store.add_user(
                {
                    "id": text(entry, "id", where, default=None) or ids.user(),
                    "name": text(entry, "name", where),
                    "email": text(entry, "email", where, default=""),
                }
            )
        for index, entry in enumerate(sequence(data, "products", "", default=[])):
            store.add_product(
                _product(
                    mapping(entry, f"products[{index}]"),
                    f"products[{index}]",
                    ids,
                    vendor,
                    now - timedelta(days=800),
                )
            )
        ensure_catalog(store, seed)
        catalog = Catalog.of(store, ids)
        customers: dict[str, dict[str, Any]] = {c["id"]: c for c in catalog.customers}
        for index, entry in enumerate(sequence(data, "customers", "", default=[])):
            where = f"customers[{index}]"
            entry = mapping(entry, where)
            customer = f.account(
                ids,
                name=text(entry, "name", where),
                account_id=text(entry, "id", where, default=None),
            )
            customers[customer["id"]] = customer
        for index, entry in enumerate(sequence(data, "subscriptions", "", default=[])):
            _subscription(
                store,
                catalog,
                customers,
                mapping(entry, f"subscriptions[{index}]"),
                f"subscriptions[{index}]",
            )
        for index, entry in enumerate(sequence(data, "requests", "", default=[])):
            created_ids.append(
                _request(store, mapping(entry, f"requests[{index}]"), f"requests[{index}]")
            )
        if created_ids or data.get("subscriptions"):
            store.record(
                ADMIN,
                "marketplace",
                "seed-file",
                "seeded",
                detail=f"{len(data.get('subscriptions') or [])} subscriptions, {len(created_ids)} "
                "requests",
            )
        # Connect objects exactly as the API returned them (see imports.py).
        created_ids += import_requests(
            store, sequence(data, "connect_requests", "", default=[]), actor=ADMIN,
            where="connect_requests",
        )  # fmt: skip
        templates = mapping(data.get("connect_templates") or {}, "connect_templates")
        for product_id, entries in templates.items():
            if str(product_id) not in store.products:
                raise SeedError(f"connect_templates.{product_id}: unknown product")
            if not isinstance(entries, list):
                raise SeedError(f"connect_templates.{product_id}: a list is required")
            import_templates(store, str(product_id), entries, f"connect_templates.{product_id}")
        spec = mapping(data.get("generate") or {}, "generate")
        count = spec.get("count", 0)
        if not isinstance(count, int) or count < 0:
            raise SeedError("generate.count: a non-negative integer is required")
        if count:
            created_ids += generate(store, count, seed=int(spec.get("seed", seed)))
    return created_ids


def _subscription(
    store: Store,
    catalog: Catalog,
    customers: dict[str, dict[str, Any]],
    entry: dict[str, Any],
    where: str,
) -> None:
    product_id = text(entry, "product", where)
    product = store.products.get(product_id)
    if product is None:
        raise SeedError(f"{where}.product: unknown product {product_id}")
    marketplace_id = (
        text(entry, "marketplace", where, default=None) or sorted(store.marketplaces)[0]
    )
    marketplace = store.marketplaces.get(marketplace_id)
    if marketplace is None:
        raise SeedError(f"{where}.marketplace: unknown marketplace {marketplace_id}")
    customer_id = text(entry, "customer", where, default=None)
    if customer_id and customer_id not in customers:
        raise SeedError(
            f"{where}.customer: unknown customer {customer_id} (declare it under customers)"
        )
    customer = customers[customer_id] if customer_id else f.account(catalog.ids)
    items = []
    for index, item in enumerate(sequence(entry, "items", where, default=[])):
        item = mapping(item, f"{where}.items[{index}]")
        mpn = text(item, "mpn", f"{where}.items[{index}]")
        if product.item(mpn) is None:
            raise SeedError(f"{where}.items[{index}].mpn: product {product.id} has no item {mpn}")
        items.append((mpn, str(item.get("quantity", 1)), "0"))
    created = o.parse_time(entry.get("created")) or store.now() - timedelta(days=90)
    asset = new_subscription(
        store,
        catalog,
        product=product,
        marketplace=marketplace,
        environment=choice(
            entry, "environment", where, ("production", "test", "preview"), default="production"
        ),
        customer=customer,
        status=choice(
            entry,
            "status",
            where,
            ("active", "suspended", "terminated", "processing"),
            default="active",
        ),
        created=created,
        subscription_id=text(entry, "subscription_id", where, default=None),
        items=items or None,
        external_id=text(entry, "external_id", where, default=None),
        asset_id=text(entry, "id", where, default=None),
    )
    for key, value in (entry.get("params") or {}).items():
        asset.params[str(key)] = str(value)


def _request(store: Store, entry: dict[str, Any], where: str) -> str:
    asset_id = text(entry, "subscription", where)
    asset = store.assets.get(asset_id)
    if asset is None:
        raise SeedError(f"{where}.subscription: unknown subscription {asset_id}")
    type_ = choice(
        entry,
        "type",
        where,
        ("cancel", "purchase", "change", "suspend", "resume"),
        default="cancel",
    )
    status = choice(
        entry,
        "status",
        where,
        ("pending", "inquiring", "approved", "failed", "scheduled", "revoking", "revoked", "draft"),
        default="pending",
    )
    params = {
        key: str(entry[key])
        for key in ("cancellation_reason", "cancellation_comment")
        if entry.get(key)
    }
    planned = o.parse_time(entry.get("planned_date"))
    if status == "scheduled" and planned is None:
        raise SeedError(f"{where}.planned_date: a scheduled request needs one")
    created = o.parse_time(entry.get("created")) or store.now()
    request = new_request(
        store,
        asset,
        type_=type_,
        status=status,
        created=o.whole_seconds(created),
        number=len(asset.request_ids) + 2,
        params=params,
        planned_date=planned,
        reason=text(entry, "reason", where, default=""),
        request_id=text(entry, "id", where, default=None),
    )
    if (
        type_ == "cancel"
        and status in ("pending", "scheduled", "inquiring", "revoking")
        and asset.status == "active"
    ):
        asset.status = "terminating"
    elif type_ == "cancel" and status == "approved":
        asset.status = "terminated"
    store.touch_asset(asset)
    return request.id
