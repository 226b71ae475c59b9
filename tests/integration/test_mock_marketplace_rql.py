"""RQL over HTTP on the mock marketplace: filters, ordering, select, paging with Content-Range.

Expected results are computed from the store's records with plain Python (an oracle that does not
go through RQL), so a filter that the index or the parser gets wrong shows up as a difference.
The clock is a frozen MockClock: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, create_app
from cancel_sandbox.marketplace.evaluate import apply_ordering, compile_filter
from cancel_sandbox.marketplace.fields import REQUEST_FIELDS
from cancel_sandbox.marketplace.records import Request
from cancel_sandbox.marketplace.rql import parse_query
from cancel_sandbox.marketplace.store import Store

from ..mock_support import (  # noqa: F401 - fixtures
    START,
    Running,
    catalog,
    clock,
    start,
    template_of,
)

# -- RQL filters over HTTP ----------------------------------------------------------------------


def _filter_cases(store: Store) -> dict[str, tuple[str, Callable[[Request], bool]]]:
    requests_ = sorted(store.requests.values(), key=lambda r: (r.created, r.id))
    middle = requests_[len(requests_) // 2].created
    moment = middle.isoformat()
    product = sorted(store.products)[0]
    marketplace = sorted(store.marketplaces)[1]
    customers = Counter(r.asset.tiers["customer"]["id"] for r in requests_)
    customer = customers.most_common(1)[0][0]
    return {
        "eq": ("eq(status,pending)", lambda r: r.status == "pending"),
        "implicit eq": ("status=approved", lambda r: r.status == "approved"),
        "field=op=value": ("type=ne=cancel", lambda r: r.type != "cancel"),
        "ne": ("ne(status,pending)", lambda r: r.status != "pending"),
        "in": (
            "in(asset.connection.type,(test,preview))",
            lambda r: r.asset.connection["type"] in ("test", "preview"),
        ),
        "out": (
            "out(status,(pending,approved))",
            lambda r: r.status not in ("pending", "approved"),
        ),
        "like suffix": (
            "like(asset.tiers.customer.name,*Ltd)",
            lambda r: r.asset.tiers["customer"]["name"].endswith("Ltd"),
        ),
        "like prefix": (
            "like(asset.tiers.customer.name,Ac*)",
            lambda r: r.asset.tiers["customer"]["name"].startswith("Ac"),
        ),
        "ilike": (
            "ilike(asset.tiers.customer.name,*GMBH*)",
            lambda r: "gmbh" in r.asset.tiers["customer"]["name"].lower(),
        ),
        "gt date": (f"gt(created,{moment})", lambda r: r.created > middle),
        "ge date": (f"ge(created,{moment})", lambda r: r.created >= middle),
        "lt date": (f"lt(created,{moment})", lambda r: r.created < middle),
        "le date": (f"le(created,{moment})", lambda r: r.created <= middle),
        "date with Z": (
            f"lt(created,{middle.strftime('%Y-%m-%dT%H:%M:%SZ')})",
            lambda r: r.created < middle,
        ),
        "and": (
            "and(eq(type,cancel),eq(status,pending))",
            lambda r: r.type == "cancel" and r.status == "pending",
        ),
        "comma and": (
            "eq(type,cancel),eq(status,approved)",
            lambda r: r.type == "cancel" and r.status == "approved",
        ),
        "ampersand and": (
            "eq(type,cancel)&eq(status,failed)",
            lambda r: r.type == "cancel" and r.status == "failed",
        ),
        "or": (
            "or(eq(status,approved),eq(status,failed))",
            lambda r: r.status in ("approved", "failed"),
        ),
        "not": ("not(eq(type,cancel))", lambda r: r.type != "cancel"),
        "null": ("eq(planned_date,null())", lambda r: r.planned_date is None),
        "not null": ("ne(planned_date,null())", lambda r: r.planned_date is not None),
        "product": (f"eq(asset.product.id,{product})", lambda r: r.asset.product.id == product),
        "asset marketplace": (
            f"eq(asset.marketplace.id,{marketplace})",
            lambda r: r.asset.marketplace["id"] == marketplace,
        ),
        "marketplace": (
            f"marketplace.id={marketplace}",
            lambda r: r.asset.marketplace["id"] == marketplace,
        ),
        "customer": (
            f"eq(asset.tiers.customer.id,{customer})",
            lambda r: r.asset.tiers["customer"]["id"] == customer,
        ),
        "param value": (
            "eq(asset.params.value,too_expensive)",
            lambda r: r.param("cancellation_reason") == "too_expensive",
        ),
        "param ids": ("eq(asset.params.id,subscription_id)", lambda r: True),
        "item mpn": (
            "like(asset.items.mpn,*PREMIUM)",
            lambda r: any(m.endswith("PREMIUM") for m, _q, _o in r.asset.items),
        ),
        "updated": (f"ge(updated,{moment})", lambda r: r.updated >= middle),
        "quoted": (
            'eq(asset.connection.type,"production")',
            lambda r: r.asset.connection["type"] == "production",
        ),
        "legacy in": (
            "asset.connection.type__in=test,preview",
            lambda r: r.asset.connection["type"] in ("test", "preview"),
        ),
        "legacy isnull": ("planned_date__isnull=False", lambda r: r.planned_date is not None),
        "legacy gte": (f"created__gte={moment}", lambda r: r.created >= middle),
        "legacy icontains": (
            "asset.tiers.customer.name__icontains=gmbh",
            lambda r: "gmbh" in r.asset.tiers["customer"]["name"].lower(),
        ),
        "nested logic": (
            "and(eq(type,cancel),or(eq(asset.connection.type,preview),not(eq(status,pending))))",
            lambda r: (
                r.type == "cancel"
                and (r.asset.connection["type"] == "preview" or r.status != "pending")
            ),
        ),
    }


FILTER_CASES = list(
    _filter_cases(create_app(MarketplaceSettings(generate=5, clock=MockClock(START))).store)
)


@pytest.mark.parametrize("case", FILTER_CASES)
def test_rql_filter_returns_exactly_what_the_oracle_selects(catalog: Running, case: str) -> None:
    rql, predicate = _filter_cases(catalog.store)[case]
    expected = {r.id for r in catalog.store.requests.values() if predicate(r)}
    assert expected, f"{case}: the data must contain matches for the test to mean anything"
    if case != "param ids":
        assert len(expected) < len(catalog.store.requests), (
            f"{case}: the filter must exclude something"
        )
    assert set(catalog.ids(rql)) == expected


def test_count_in_content_range_matches_the_filter(catalog: Running) -> None:
    response = catalog.get("/requests?and(eq(type,cancel),eq(status,pending))&limit=0")
    expected = sum(
        1 for r in catalog.store.requests.values() if r.type == "cancel" and r.status == "pending"
    )
    assert response.json() == []
    assert response.headers["Content-Range"] == f"items 0-0/{expected}"


def test_paging_with_limit_offset_and_content_range(catalog: Running) -> None:
    total = len(catalog.store.requests)
    everything = catalog.ids("ordering(created,id)")
    assert everything == [
        r.id for r in sorted(catalog.store.requests.values(), key=lambda r: (r.created, r.id))
    ]
    default = catalog.get("/requests")
    assert len(default.json()) == 100 and default.headers["Content-Range"] == f"items 0-99/{total}"
    page = catalog.get("/requests?ordering(created,id)&limit=5&offset=10")
    assert [d["id"] for d in page.json()] == everything[10:15]
    assert page.headers["Content-Range"] == f"items 10-14/{total}"
    last = catalog.get(f"/requests?ordering(created,id)&limit=100&offset={total - 3}")
    assert last.headers["Content-Range"] == f"items {total - 3}-{total - 1}/{total}"
    beyond = catalog.get(f"/requests?limit=10&offset={total + 5}")
    assert (
        beyond.json() == []
        and beyond.headers["Content-Range"] == f"items {total + 5}-{total + 5}/{total}"
    )
    empty = catalog.get("/requests?eq(status,no-such-status)")
    assert empty.json() == [] and empty.headers["Content-Range"] == "items 0-0/0"
    assert catalog.get("/requests?limit=1000").status_code == 200
    too_many = catalog.get("/requests?limit=1001")
    assert too_many.status_code == 400 and too_many.json()["error_code"] == "VAL_001"


def test_ordering_by_one_or_several_keys_in_either_direction(catalog: Running) -> None:
    records = list(catalog.store.requests.values())
    descending = catalog.ids("ordering(-created)")
    assert [catalog.store.requests[i].created for i in descending] == sorted(
        (r.created for r in records), reverse=True
    )
    mixed = catalog.ids("ordering(-created,id)")
    assert mixed == [r.id for r in sorted(records, key=lambda r: (-r.created.timestamp(), r.id))]
    by_status = catalog.ids("ordering(status,-created,id)")
    assert by_status == [
        r.id for r in sorted(records, key=lambda r: (r.status, -r.created.timestamp(), r.id))
    ]
    ties = Counter(r.created for r in records if r.type == "cancel" and r.status == "pending")
    assert max(ties.values()) > 1, "generated data must contain ties in created"


def test_select_removes_fields_top_level_and_nested(catalog: Running) -> None:
    approved = next(r for r in catalog.store.requests.values() if r.status == "approved")
    full = catalog.get(f"/requests?eq(id,{approved.id})").json()[0]
    assert full["activation_key"] and "template" in full
    light = catalog.get(f"/requests?select(-activation_key,-template)&eq(id,{approved.id})").json()[
        0
    ]
    assert "activation_key" not in light and "template" not in light
    assert {k: v for k, v in full.items() if k not in ("activation_key", "template")} == light
    no_params = catalog.get(
        f"/requests?select(-asset.params,-asset.tiers.customer.contact_info)&eq(id,{approved.id})"
    ).json()[0]
    assert (
        "params" not in no_params["asset"]
        and "contact_info" not in no_params["asset"]["tiers"]["customer"]
    )
    assert no_params["asset"]["tiers"]["customer"]["id"] == full["asset"]["tiers"]["customer"]["id"]
    # Shared objects were copied, not edited: the next full read still has everything.
    assert catalog.get(f"/requests/{approved.id}").json() == full
    positive = catalog.get(f"/requests?select(asset,events)&eq(id,{approved.id})").json()[0]
    assert positive == full  # this mock hides nothing, so asking for fields adds nothing


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("and(eq(status,pending)", "Invalid RQL"),
        ("eq(bogus,1)", "bogus"),
        ("ordering(bogus)", "bogus"),
        ("select(-bogus)", "bogus"),
        ("gt(created,yesterday)", "created"),
        ("eq(answered,maybe)", "answered"),
        ("limit=ten", "limit"),
        ("search=backup", "search"),
    ],
)
def test_malformed_or_unknown_rql_is_a_400(catalog: Running, query: str, fragment: str) -> None:
    response = catalog.get(f"/requests?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "VAL_001" and any(fragment in e for e in body["errors"])


def test_the_index_answers_like_a_full_scan_for_random_queries() -> None:
    """Planner and buckets against brute force: compile the filter, scan everything, sort."""
    store = create_app(MarketplaceSettings(generate=400, seed=9, clock=MockClock(START))).store
    rng = random.Random(42)
    records = sorted(store.requests.values(), key=lambda r: (r.created, r.id))
    values = {
        "status": ["pending", "approved", "failed", "scheduled"],
        "type": ["cancel", "purchase"],
        "asset.product.id": sorted(store.products),
        "asset.connection.type": ["production", "test", "preview"],
        "marketplace.id": sorted(store.marketplaces),
        "asset.marketplace.id": sorted(store.marketplaces),
    }
    for _ in range(300):
        terms = []
        for field, options in rng.sample(sorted(values.items()), rng.randint(0, 4)):
            op = rng.choice(["eq", "ne", "in", "out"])
            terms.append(
                f"{op}({field},({','.join(rng.sample(options, 2))}))"
                if op in ("in", "out")
                else f"{op}({field},{rng.choice(options)})"
            )
        for op in rng.sample(["ge", "gt", "le", "lt"], rng.randint(0, 2)):
            terms.append(f"{op}(created,{rng.choice(records).created.isoformat()})")
        if rng.random() < 0.5:
            terms.append(f"out(id,({','.join(r.id for r in rng.sample(records, 5))}))")
        if rng.random() < 0.2:
            terms.append("like(asset.tiers.customer.name,*e*)")
        ordering = rng.choice(
            [
                "",
                "&ordering(created)",
                "&ordering(-created)",
                "&ordering(created,id)",
                "&ordering(-created,-id)",
                "&ordering(asset.connection.type,-created,id)",
            ]
        )
        # lib-rql's grammar wants two or more terms in and(): one term goes alone, as R() writes it.
        text = (f"and({','.join(terms)})" if len(terms) > 1 else "".join(terms)) + ordering
        query = parse_query(
            f"{text}&limit={rng.choice([0, 1, 7, 100])}&offset={rng.choice([0, 3, 50])}",
            fields=REQUEST_FIELDS,
        )
        total, page = store.list_requests(query)
        matches = [r for r in records if compile_filter(query.filter, REQUEST_FIELDS)(r)]
        # Documented tie-break: by id, in the direction of the first key (default created,id).
        keys = list(query.ordering) or ["created"]
        keys.append("-id" if keys[0].startswith("-") else "id")
        apply_ordering(matches, keys, REQUEST_FIELDS)
        assert total == len(matches), text
        assert [r.id for r in page] == [
            r.id for r in matches[query.offset : query.offset + query.limit]
        ], text


def test_keyset_paging_yields_every_pending_once_while_approving(
    start: Callable[..., Running],
) -> None:
    """The processor's query shape: ge(created, cursor) + out(ids seen at the cursor)."""
    mp = start(generate=120, seed=13)
    pending = {r.id for r in mp.pending()}
    products = ",".join(sorted(mp.store.products))
    seen: list[str] = []
    cursor, at_cursor = "2000-01-01T00:00:00+00:00", list[str]()
    for _ in range(200):  # bounded: 120 requests in pages of 7 need 18 pages
        rql = (
            f"and(eq(type,cancel),eq(status,pending),ge(created,{cursor}),"
            f"out(id,({','.join(at_cursor) or 'none'})),in(asset.product.id,({products})))"
        )
        page = mp.get(
            f"/requests?select(-activation_key,-template)&{rql}&ordering(created,id)&limit=7"
        ).json()
        for doc in page:
            assert (
                mp.act(
                    doc["id"], "approve", {"template_id": template_of(mp.store.requests[doc["id"]])}
                ).status_code
                == 200
            )
            seen.append(doc["id"])
            at_cursor = at_cursor + [doc["id"]] if doc["created"] == cursor else [doc["id"]]
            cursor = doc["created"]
        if len(page) < 7:
            break
    assert sorted(seen) == sorted(pending) and len(seen) == len(set(seen))


def test_offset_paging_while_approving_skips_requests_as_on_connect(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=60, seed=13)
    approved = []
    for offset in range(0, 60, 10):
        for doc in mp.get(
            f"/requests?and(eq(type,cancel),eq(status,pending))&limit=10&offset={offset}"
        ).json():
            assert mp.act(
                doc["id"], "approve", {"template_id": template_of(mp.store.requests[doc["id"]])}
            ).ok
            approved.append(doc["id"])
    assert len(approved) < 60  # the window moved under the pager: the trap the processor avoids
