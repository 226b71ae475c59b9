"""Connect-shaped shared objects: accounts, connections, marketplaces, templates, items, parameters.

Built once and referenced by many subscriptions (see records.py), so they must never be mutated
after creation. Names and addresses are drawn from small fixed tables with the caller's seeded
random source: the same seed gives the same customers. Preview connections use Connect's
placeholder ids (``CT-0000-0000-0000``, ``HB-0000-0000``, ``CRD-00000-00000-00000``).
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from cancel_sandbox.marketplace.objects import IdMaker, iso

__all__ = [
    "PREVIEW_CONNECTION_ID",
    "PREVIEW_HUB",
    "PREVIEW_CONTRACT",
    "CANCELLATION_REASONS",
    "person",
    "account",
    "connection",
    "marketplace_object",
    "template_object",
    "item_definition",
    "param_definitions",
]

PREVIEW_CONNECTION_ID = "CT-0000-0000-0000"
PREVIEW_HUB = {"id": "HB-0000-0000", "name": "None"}
PREVIEW_CONTRACT = {"id": "CRD-00000-00000-00000", "name": "None"}

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
          "Margaret", "John", "Sophie", "Linus", "Hedy", "Dennis")  # fmt: skip
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
         "Perlman", "Berners-Lee", "Hamilton", "Backus", "Wilson", "Torvalds", "Lamarr",
         "Ritchie")  # fmt: skip
_COMPANY = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
            "Tyrell", "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Monarch", "Aperture",
            "Massive")  # fmt: skip
_SUFFIX = ("Ltd", "GmbH", "Inc", "S.L.", "BV", "AG", "LLC", "Oy")
_CITIES = (  # city, state, postal code, country, dialling code, area code
    ("Barcelona", "Catalonia", "08001", "ES", "+34", "93"),
    ("Berlin", "Berlin", "10115", "DE", "+49", "30"),
    ("Austin", "Texas", "73301", "US", "+1", "512"),
    ("Lyon", "Auvergne-Rhone-Alpes", "69001", "FR", "+33", "4"),
    ("Utrecht", "Utrecht", "3511", "NL", "+31", "30"),
    ("Turku", "Southwest Finland", "20100", "FI", "+358", "2"),
)


def person(
    rng: random.Random, domain: str, dialling: str = "+34", area: str = "93"
) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}@{domain}".lower().replace(" ", ""),
        "phone_number": {
            "country_code": dialling,
            "area_code": area,
            "phone_number": str(rng.randrange(1000000, 9999999)),
            "extension": "",
        },
    }


def account(
    ids: IdMaker, *, name: str | None = None, scope: str = "customer", account_id: str | None = None
) -> dict[str, Any]:
    """A tier account (customer, tier1 or tier2) with contact info, as Connect nests it."""
    rng = ids.rng
    company = name or f"{rng.choice(_COMPANY)} {rng.choice(_SUFFIX)}"
    city, state, postal, country, dialling, area = rng.choice(_CITIES)
    domain = company.split()[0].lower() + ".example"
    return {
        "id": account_id or ids.account(),
        "name": company,
        "type": scope,
        "external_id": str(rng.randrange(10000, 99999)),
        "external_uid": ids.uid(),
        "tax_id": f"{country}{rng.randrange(10**8, 10**9)}",
        "contact_info": {
            "address_line1": f"{rng.randrange(1, 200)} {rng.choice(_LAST)} Street",
            "address_line2": "",
            "city": city,
            "state": state,
            "postal_code": postal,
            "country": country,
            "contact": person(rng, domain, dialling, area),
        },
    }


def connection(
    ids: IdMaker,
    environment: str,
    *,
    provider: dict[str, str],
    vendor: dict[str, str],
    hub: dict[str, str],
) -> dict[str, Any]:
    """A product's connection to a hub in one environment; preview uses Connect's placeholders."""
    if environment == "preview":
        return {
            "id": PREVIEW_CONNECTION_ID,
            "type": "preview",
            "provider": provider,
            "vendor": vendor,
            "hub": dict(PREVIEW_HUB),
        }
    return {
        "id": ids.connection(),
        "type": environment,
        "provider": provider,
        "vendor": vendor,
        "hub": hub,
    }


def marketplace_object(marketplace_id: str, name: str) -> dict[str, str]:
    return {"id": marketplace_id, "name": name, "icon": f"/media/marketplaces/{marketplace_id}.png"}


def template_object(
    template_id: str,
    *,
    name: str,
    body: str,
    scope: str = "asset",
    type_: str | None = "fulfillment",
    at: datetime,
    position: int = 10000,
) -> dict[str, Any]:
    stamp = {"at": iso(at)}
    return {
        "id": template_id,
        "name": name,
        "title": name,
        "body": body,
        "scope": scope,
        "type": type_,
        "position": position,
        "events": {"created": stamp, "updated": stamp},
    }


def item_definition(
    product_id: str,
    number: int,
    *,
    mpn: str,
    display_name: str,
    period: str,
    item_type: str = "Reservation",
    unit: str = "Licenses",
) -> dict[str, Any]:
    digits = product_id[4:].replace("-", "_")
    return {
        "id": f"PRD_{digits}_{number:04d}",
        "global_id": f"{product_id}-{number:04d}",
        "mpn": mpn,
        "type": unit,
        "display_name": display_name,
        "period": period,
        "item_type": item_type,
    }


CANCELLATION_REASONS = (
    ("too_expensive", "Too expensive"),
    ("missing_features", "Missing features"),
    ("switched_provider", "Switched to another provider"),
    ("other", "Other"),
)


def param_definitions(subscription_param: str = "subscription_id") -> list[dict[str, Any]]:
    """The parameters every generated product declares, in Connect's parameter shape.

    The fulfillment-phase one carries the vendor's subscription id; the two ordering-phase ones are
    what a customer may fill in when cancelling.
    """
    choices = [{"label": label, "value": value} for value, label in CANCELLATION_REASONS]
    return [
        {
            "id": subscription_param,
            "name": subscription_param,
            "title": "Subscription ID",
            "type": "text",
            "phase": "fulfillment",
            "description": "The vendor's subscription id.",
            "constraints": {
                "required": True,
                "hidden": False,
                "readonly": False,
                "unique": True,
                "reconciliation": True,
                "meta": {},
            },
        },
        {
            "id": "cancellation_reason",
            "name": "cancellation_reason",
            "title": "Cancellation reason",
            "type": "choice",
            "phase": "ordering",
            "description": "Why the customer cancels.",
            "constraints": {
                "required": False,
                "hidden": False,
                "readonly": False,
                "unique": False,
                "meta": {"choices": choices},
            },
            "value_choices": choices,
        },
        {
            "id": "cancellation_comment",
            "name": "cancellation_comment",
            "title": "Comment",
            "type": "text",
            "phase": "ordering",
            "description": "Free text from the customer.",
            "constraints": {
                "required": False,
                "hidden": False,
                "readonly": False,
                "unique": False,
                "meta": {},
            },
        },
    ]
