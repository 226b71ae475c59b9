"""Deterministic test data: a default catalog and generated backlogs of cancel requests.

For a given seed (and start time: dates are relative to the store's clock) the same products,
subscriptions, customers and requests come out every time. ``generate(store, n)`` adds ``n``
pending cancels spread over the store's products and marketplaces (the default catalog has four
and three) and all three environments, plus context that makes filters matter: active subscriptions
with approved purchases (cancellable from the web page), pending purchases, approved, failed and
scheduled cancels. Some customers own several subscriptions (several cancels per customer); about
40% of cancels carry a ``cancellation_reason``; two products sell a premium plan by item MPN; one
product bills pay-per-use with the quantity ``unlimited``. ``created`` is whole seconds with roughly
one request in six sharing its second with the previous one, so keyset paging meets ties.

Every default product has fulfillment templates of scope ``asset``, the first of which
:func:`approve_template` returns (tests need it), plus an inquire template and a tier1 template so
that scope/type filters matter.
"""

from __future__ import annotations

import gc
import random
from datetime import datetime, timedelta
from typing import Any

from cancel_sandbox.marketplace import factories as f
from cancel_sandbox.marketplace import objects as o
from cancel_sandbox.marketplace.builders import Catalog, new_request, new_subscription
from cancel_sandbox.marketplace.records import Product
from cancel_sandbox.marketplace.store import ADMIN, Store

__all__ = ["ensure_catalog", "generate", "approve_template", "ENVIRONMENT_WEIGHTS"]

ENVIRONMENT_WEIGHTS = {"production": 7, "test": 2, "preview": 1}
CANCEL_BODY = (
    "# Your subscription has been cancelled\n\nSubscription {{ subscription_id }} of "
    "{{ customer }} ends as requested in {{ request_id }}. Thank you for having been with us."
)
_PRODUCTS = (
    # name, billing period, [(mpn, display name, item type, period)]
    (
        "Cloud Backup",
        "monthly",
        [
            ("BACKUP-STD", "Backup Standard", "Reservation", "Monthly"),
            ("BACKUP-PREMIUM", "Backup Premium", "Reservation", "Monthly"),
        ],
    ),
    (
        "Team Chat",
        "yearly",
        [
            ("CHAT-BASIC", "Chat Basic", "Reservation", "Yearly"),
            ("CHAT-PREMIUM", "Chat Premium", "Reservation", "Yearly"),
        ],
    ),
    ("Secure Mail", "monthly", [("MAIL-STD", "Mailbox", "Reservation", "Monthly")]),
    ("Data Pipeline", None, [("PIPE-PPU", "Processed gigabytes", "PPU", "Monthly")]),
)
_MARKETPLACES = ("Europe Marketplace", "North America Marketplace", "Asia Pacific Marketplace")
_USERS = ("Ada Lovelace", "Alan Turing", "Grace Hopper")


def approve_template(product: Product) -> str:
    """The id of the product's first fulfillment template for scope asset (LookupError if none)."""
    template = product.approve_template()
    if template is None:
        raise LookupError(f"product {product.id} has no fulfillment template")
    return template


def _default_product(
    ids: o.IdMaker, vendor: dict[str, str], spec: tuple[Any, ...], at: datetime
) -> Product:
    name, period, items = spec
    product_id = ids.product()
    templates = [
        f.template_object(
            ids.template(), name="Cancellation confirmed", body=CANCEL_BODY, at=at, position=100
        ),
        f.template_object(
            ids.template(),
            name="Activation",
            body="# Welcome\n\n{{ subscription_id }} is ready.",
            at=at,
            position=200,
        ),
        f.template_object(
            ids.template(),
            name="Need more information",
            type_="inquire",
            body="Please check the parameters of {{ request_id }}.",
            at=at,
            position=300,
        ),
        f.template_object(
            ids.template(),
            name="Reseller notice",
            scope="tier1",
            type_=None,
            body="A subscription of your customer changed.",
            at=at,
            position=400,
        ),
    ]
    return Product(
        id=product_id,
        name=name,
        vendor=vendor,
        params=f.param_definitions(),
        items=[
            f.item_definition(
                product_id,
                number,
                mpn=mpn,
                display_name=display,
                period=item_period,
                item_type=item_type,
                unit="Gigabytes" if item_type == "PPU" else "Licenses",
            )
            for number, (mpn, display, item_type, item_period) in enumerate(items, start=1)
        ],
        templates=templates,
        billing_period=period,
        created=at,
        description=f"{name}, as a service.",
    )


def ensure_catalog(store: Store, seed: int) -> None:
    """Create the default products, marketplaces and users if the store has none."""
    with store.change():
        if all(product.imported for product in store.products.values()):
            ids = o.IdMaker(random.Random(f"{seed}:catalog"), taken=store.taken)
            vendor = {"id": ids.vendor(), "name": "Local Vendor Inc"}
            at = store.now() - timedelta(days=800)
            for spec in _PRODUCTS:
                store.add_product(_default_product(ids, vendor, spec, at))
        if not store.marketplaces:
            ids = o.IdMaker(random.Random(f"{seed}:marketplaces"), taken=store.taken)
            for name in _MARKETPLACES:
                store.add_marketplace(f.marketplace_object(ids.marketplace(), name))
        if not store.users:  # the vendor's agents, whom requests can be assigned to by id
            ids = o.IdMaker(random.Random(f"{seed}:users"), taken=store.taken)
            for name in _USERS:
                email = name.lower().replace(" ", ".") + "@vendor.example"
                store.add_user({"id": ids.user(), "name": name, "email": email})


def _cancel_params(rng: random.Random) -> dict[str, str]:
    params: dict[str, str] = {}
    if rng.random() < 0.4:
        params["cancellation_reason"] = rng.choice(f.CANCELLATION_REASONS)[0]
        if rng.random() < 0.5:
            params["cancellation_comment"] = rng.choice(
                (
                    "Budget cuts this quarter.",
                    "We moved to a suite that includes this.",
                    "Not used enough.",
                    "Company closing the branch office.",
                )
            )
    return params


def generate(store: Store, count: int, *, seed: int) -> list[str]:
    """Add ``count`` pending cancels (and context, see the module docstring); their ids."""
    if count < 0:
        raise ValueError("count must not be negative")
    # Generating creates millions of long-lived objects and no cycles: without this the cyclic
    # collector rescans the growing heap again and again (100,000 cancels: ~10 s instead of ~6 s).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _generate(store, count, seed)
    finally:
        if collecting:
            gc.enable()


def _generate(store: Store, count: int, seed: int) -> list[str]:
    with store.change():
        ensure_catalog(store, seed)
        store.generation += 1
        rng = random.Random(f"{seed}:round:{store.generation}")
        ids = o.IdMaker(rng, taken=store.taken)
        catalog = Catalog.of(store, ids)
        # Imported products keep Connect's definitions (no items, other parameters): not reused.
        products = sorted(
            (p for p in store.products.values() if not p.imported), key=lambda p: p.id
        )
        marketplaces = sorted(store.marketplaces.values(), key=lambda m: m["id"])
        environments = list(ENVIRONMENT_WEIGHTS)
        weights = list(ENVIRONMENT_WEIGHTS.values())
        customers = catalog.customers[-50:] + [f.account(ids) for _ in range(max(3, count // 3))]
        now = store.now()
        last_created = now - timedelta(days=30)
        extra = max(2, count // 10)
        plan = (
            ["cancel:pending"] * count
            + ["purchase:approved"] * extra
            + ["purchase:pending"] * max(1, extra // 2)
            + ["cancel:approved"] * max(1, extra // 2)
            + ["cancel:failed"] * max(1, extra // 3)
            + ["cancel:scheduled"] * max(1, extra // 5)
        )
        pending: list[str] = []
        for position, kind in enumerate(plan):
            type_, status = kind.split(":")
            product = (
                products[position % len(products)]
                if position < 3 * len(products)
                else rng.choice(products)
            )
            marketplace = (
                marketplaces[position % len(marketplaces)]
                if position < 3 * len(marketplaces)
                else rng.choice(marketplaces)
            )
            environment = (
                environments[position % 3]
                if position < 3
                else rng.choices(environments, weights)[0]
            )
            # A few heavy customers own many subscriptions: squaring the draw skews towards the
            # front.
            customer = customers[int(len(customers) * rng.random() ** 2)]
            if rng.random() < 0.17 and position:
                created = last_created  # a tie: same second as the previous request
            else:
                created = now - timedelta(seconds=rng.randint(60, 30 * 86400))
            last_created = created
            asset_status = {
                "cancel:pending": "terminating",
                "cancel:scheduled": "terminating",
                "cancel:approved": "terminated",
                "purchase:pending": "processing",
            }.get(kind, "active")
            asset = new_subscription(
                store,
                catalog,
                product=product,
                marketplace=marketplace,
                environment=environment,
                customer=customer,
                status=asset_status,
                created=created - timedelta(days=rng.randint(30, 700)),
                subscription_id=None
                if type_ == "purchase" and status == "pending"
                else f"SUB-{rng.randrange(16**8):08X}",
            )
            planned = now + timedelta(days=rng.randint(1, 20)) if status == "scheduled" else None
            request = new_request(
                store,
                asset,
                type_=type_,
                status=status,
                created=created,
                number=1 if type_ == "purchase" else 2,
                params=_cancel_params(rng) if type_ == "cancel" else None,
                planned_date=planned,
                reason="The subscription has an outstanding balance." if status == "failed" else "",
            )
            if kind == "cancel:pending":
                pending.append(request.id)
        store.record(
            ADMIN,
            "marketplace",
            "generator",
            "seeded",
            detail=f"round {store.generation}: {count} pending cancels, {len(plan) - count} others",
        )
        return pending
