"""The mock Connect marketplace over real HTTP (uvicorn in a thread) and, for its data, in process.

Expected results are computed from the store's records with plain Python (an oracle that does not
go through RQL), so a filter that the index or the parser gets wrong shows up as a difference.
The clock is a frozen MockClock: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from processor.mock.faults import FaultSettings
from processor.mock.marketplace import (
    DEFAULT_API_KEY,
    MarketplaceSettings,
    MockClock,
    SeedError,
    approve_template,
    create_app,
)
from processor.mock.marketplace.evaluate import apply_ordering, compile_filter
from processor.mock.marketplace.fields import REQUEST_FIELDS
from processor.mock.marketplace.records import Request, render_asset, render_request
from processor.mock.marketplace.rql import parse_query
from processor.mock.marketplace.serialize import Serializer
from processor.mock.marketplace.store import Store
from processor.mock.serve import ServerThread

REPO = Path(__file__).resolve().parents[1]
START = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
SECRET = DEFAULT_API_KEY.split(":", 1)[1]
KEY_ID = "SU-000-000-000"


class Running:
    """A started marketplace and a keep-alive session that sends the API key."""

    def __init__(self, app: Any, server: ServerThread) -> None:
        self.app, self.server, self.store = app, server, app.store
        self.http = requests.Session()
        self.http.headers["Authorization"] = app.config.api_key

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.http.request(
            method, f"{self.server.url}/public/v1{path}", json=body, timeout=10, **kwargs
        )

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)

    def act(self, request_id: str, action: str, body: Any = None) -> requests.Response:
        return self.call("POST", f"/requests/{request_id}/{action}", body)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.server.url + path, timeout=10, **kwargs)

    def ledger(self, since: int = 0, object_id: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since, "limit": 10000}
        if object_id:
            params["id"] = object_id
        return self.admin("GET", "/admin/ledger", params=params).json()["entries"]

    def ids(self, rql: str) -> list[str]:
        """Every id a query returns, through pages of 1000."""
        out: list[str] = []
        while True:
            response = self.get(f"/requests?{rql}&limit=1000&offset={len(out)}")
            assert response.status_code == 200, response.text
            page = response.json()
            out += [doc["id"] for doc in page]
            if len(page) < 1000:
                return out

    def pending(self) -> Iterator[Request]:
        """Fresh pending cancels, oldest first (each test step takes its own)."""
        return iter(
            sorted(
                (
                    r
                    for r in self.store.requests.values()
                    if r.type == "cancel" and r.status == "pending"
                ),
                key=lambda r: (r.created, r.id),
            )
        )


def template_of(request: Request) -> str:
    return approve_template(request.asset.product)


@pytest.fixture
def clock() -> MockClock:
    return MockClock(START)


@pytest.fixture
def start(clock: MockClock) -> Iterator[Callable[..., Running]]:
    servers: list[ServerThread] = []

    def starter(**settings: Any) -> Running:
        settings.setdefault("clock", clock)
        app = create_app(MarketplaceSettings(**settings))
        server = ServerThread(app).start()
        servers.append(server)
        return Running(app, server)

    yield starter
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def catalog() -> Iterator[Running]:
    """A read-only marketplace shared by the query tests (nothing may change it)."""
    app = create_app(MarketplaceSettings(generate=300, seed=3, clock=MockClock(START)))
    with ServerThread(app) as server:
        yield Running(app, server)


@pytest.fixture(scope="module")
def workflow() -> Iterator[Running]:
    """A marketplace whose pending cancels the status-rule tests use up one by one."""
    app = create_app(MarketplaceSettings(generate=160, seed=5, clock=MockClock(START)))
    with ServerThread(app) as server:
        running = Running(app, server)
        running.queue = running.pending()  # type: ignore[attr-defined]
        yield running


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


# -- status rules ---------------------------------------------------------------------------------

FUTURE = (START + timedelta(days=3)).isoformat()
ALLOWED = {
    "approve": ({"pending"}, "approved"),
    "fail": ({"pending"}, "failed"),
    "inquire": ({"pending"}, "inquiring"),
    "pend": ({"inquiring"}, "pending"),
    "schedule": ({"pending"}, "scheduled"),
    "revoke": ({"scheduled"}, "revoking"),
    "confirm": ({"revoking"}, "revoked"),
    "assign": ({"pending", "inquiring", "scheduled", "revoking"}, None),
}
PATHS = {  # how to bring a pending request into each status
    "pending": [],
    "inquiring": ["inquire"],
    "scheduled": ["schedule"],
    "revoking": ["schedule", "revoke"],
    "approved": ["approve"],
    "failed": ["fail"],
    "revoked": ["schedule", "revoke", "confirm"],
}


def _body(action: str, request: Request) -> dict[str, Any]:
    return {
        "approve": {"template_id": template_of(request)},
        "fail": {"reason": "Refused by the vendor."},
        "schedule": {"planned_date": FUTURE},
        "revoke": {"reason": "Changed my mind."},
        "assign": {"email": "agent@vendor.example"},
    }.get(action, {})


@pytest.mark.parametrize("status", list(PATHS))
@pytest.mark.parametrize("action", list(ALLOWED))
def test_each_action_is_allowed_only_from_its_statuses(
    workflow: Running, action: str, status: str
) -> None:
    request = next(workflow.queue)  # type: ignore[attr-defined]
    for step in PATHS[status]:
        assert workflow.act(request.id, step, _body(step, request)).status_code == 200
    assert workflow.get(f"/requests/{request.id}").json()["status"] == status
    seq = workflow.ledger()[-1]["seq"]
    response = workflow.act(request.id, action, _body(action, request))
    allowed, target = ALLOWED[action]
    if status in allowed:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == (target or status)
        assert any(e["id"] == request.id and e["actor"] == KEY_ID for e in workflow.ledger(seq))
    else:
        assert response.status_code == 400
        assert response.json()["error_code"] == "REQ_003"
        assert workflow.get(f"/requests/{request.id}").json()["status"] == status
        assert [e for e in workflow.ledger(seq) if e["id"] == request.id] == []


def test_approve_terminates_the_subscription_and_renders_the_template(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    seq = mp.ledger()[-1]["seq"]
    response = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert response.status_code == 200
    doc = response.json()
    sub_id = request.asset.params["subscription_id"]
    assert (
        doc["status"] == "approved"
        and sub_id in doc["activation_key"]
        and request.id in doc["activation_key"]
    )
    assert doc["template"]["id"] == template_of(request)
    assert doc["asset"]["status"] == "terminated"
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "terminated"
    changes = [(e["kind"], e["id"], e["from"], e["to"], e["actor"]) for e in mp.ledger(seq)]
    assert changes == [
        ("request", request.id, "pending", "approved", KEY_ID),
        ("asset", request.asset.id, "terminating", "terminated", KEY_ID),
    ]
    again = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert again.status_code == 400 and again.json()["error_code"] == "REQ_003"


def test_the_ledger_times_changes_to_the_microsecond_while_objects_keep_whole_seconds(
    start: Callable[..., Running], clock: MockClock
) -> None:
    mp = start(generate=10)
    first, second = list(mp.pending())[:2]
    seq = mp.ledger()[-1]["seq"]
    clock.advance(0.25)
    mp.act(first.id, "approve", {"template_id": template_of(first)})
    clock.advance(0.5)
    doc = mp.act(second.id, "approve", {"template_id": template_of(second)}).json()
    stamps = {e["id"]: datetime.fromisoformat(e["at"]) for e in mp.ledger(seq) if e["kind"] == "request"}
    # Benchmarks time approvals from the ledger: whole seconds would read 0.5 s as 0 or 1.
    assert stamps == {first.id: START + timedelta(seconds=0.25), second.id: START + timedelta(seconds=0.75)}
    assert datetime.fromisoformat(doc["updated"]) == START  # Connect's precision on the object


def test_fail_reactivates_the_subscription_and_keeps_the_reason(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    missing = mp.act(request.id, "fail", {})
    assert missing.status_code == 400 and missing.json() == {
        "error_code": "REQ_005",
        "errors": ["Missed fields: reason."],
    }
    response = mp.act(request.id, "fail", {"reason": "Outstanding balance."})
    assert (
        response.json()["status"] == "failed"
        and response.json()["reason"] == "Outstanding balance."
    )
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "active"
    assert [(e["kind"], e["to"]) for e in mp.ledger()[-2:]] == [
        ("request", "failed"),
        ("asset", "active"),
    ]


def test_approve_needs_a_template_of_the_requests_own_product(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    other = next(p for p in mp.store.products.values() if p.id != request.asset.product.id)
    assert mp.act(request.id, "approve", {}).json() == {
        "error_code": "REQ_005",
        "errors": ["Missed fields: template_id."],
    }
    foreign = mp.act(request.id, "approve", {"template_id": approve_template(other)})
    assert foreign.status_code == 400 and foreign.json()["error_code"] == "VAL_001"
    inquire_template = next(
        t["id"] for t in request.asset.product.templates if t["type"] == "inquire"
    )
    assert mp.act(request.id, "approve", {"template_id": inquire_template}).status_code == 400
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    tile = mp.act(request.id, "approve", {"activation_tile": "Done by hand."})
    assert tile.status_code == 200 and tile.json()["activation_key"] == "Done by hand."


def test_scheduled_request_returns_to_pending_when_the_clock_passes(
    start: Callable[..., Running], clock: MockClock
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    assert mp.act(request.id, "schedule", {}).json()["error_code"] == "REQ_005"
    past = mp.act(
        request.id, "schedule", {"planned_date": (START - timedelta(hours=1)).isoformat()}
    )
    assert past.status_code == 400 and past.json()["error_code"] == "VAL_001"
    planned = START + timedelta(hours=6)
    assert (
        mp.act(request.id, "schedule", {"planned_date": planned.isoformat()}).json()["status"]
        == "scheduled"
    )
    clock.advance(6 * 3600 - 1)
    assert mp.get(f"/requests/{request.id}").json()["status"] == "scheduled"
    clock.advance(1)
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    entry = mp.ledger(object_id=request.id)[-1]
    assert (entry["from"], entry["to"], entry["actor"]) == ("scheduled", "pending", "system")


def test_revoke_and_confirm_give_the_subscription_back(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    mp.act(request.id, "schedule", {"planned_date": FUTURE})
    assert mp.act(request.id, "revoke", {"reason": "Stay."}).json()["status"] == "revoking"
    assert mp.act(request.id, "confirm").json()["status"] == "revoked"
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "active"


def test_assign_by_id_or_email(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    by_email = mp.act(request.id, "assign", {"email": "agent@vendor.example"}).json()["assignee"]
    assert by_email["email"] == "agent@vendor.example" and by_email["id"].startswith("UR-")
    agent = sorted(mp.store.users)[0]  # the default catalog's agents are the known users
    by_id = mp.act(request.id, "assign", {"id": agent}).json()["assignee"]
    assert by_id == mp.store.users[agent]
    assert mp.act(request.id, "assign", {}).status_code == 400
    entries = [e for e in mp.ledger(object_id=request.id) if e["event"] == "assigned"]
    assert [(e["from"], e["to"], e["actor"]) for e in entries] == [
        (None, by_email["id"], KEY_ID),
        (by_email["id"], agent, KEY_ID),
    ]
    assert mp.act(request.id, "unassign").json()["assignee"] == ""


def test_put_updates_parameters_and_note_only_while_editable(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    body = {
        "asset": {"params": [{"id": "subscription_id", "value": "SUB-NEW", "value_error": ""}]},
        "note": "checked",
    }
    updated = mp.call("PUT", f"/requests/{request.id}", body).json()
    assert updated["note"] == "checked"
    assert (
        next(p for p in updated["asset"]["params"] if p["id"] == "subscription_id")["value"]
        == "SUB-NEW"
    )
    unknown = mp.call(
        "PUT", f"/requests/{request.id}", {"asset": {"params": [{"id": "nope", "value": "x"}]}}
    )
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "VAL_001"
    mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert "SUB-NEW" in mp.get(f"/requests/{request.id}").json()["activation_key"]
    late = mp.call("PUT", f"/requests/{request.id}", {"note": "too late"})
    assert late.status_code == 400 and late.json()["error_code"] == "REQ_003"


def test_creating_a_cancel_needs_an_active_subscription(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    active = next(a for a in mp.store.assets.values() if a.status == "active")
    created = mp.call("POST", "/requests", {"type": "cancel", "asset": {"id": active.id}})
    assert created.status_code == 201
    doc = created.json()
    assert (
        doc["type"] == "cancel"
        and doc["status"] == "pending"
        and doc["asset"]["status"] == "terminating"
    )
    assert doc["id"].startswith("PR-" + active.id[3:] + "-")
    assert mp.get(f"/conversations?instance_id={doc['id']}").json()[0]["instance_id"] == doc["id"]
    again = mp.call("POST", "/requests", {"type": "cancel", "asset": {"id": active.id}})
    assert again.status_code == 400 and "terminating" in again.json()["errors"][0]
    assert (
        mp.call("POST", "/requests", {"type": "purchase", "asset": {"id": active.id}}).status_code
        == 400
    )
    assert (
        mp.call(
            "POST", "/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0000"}}
        ).status_code
        == 400
    )
    assert [e["event"] for e in mp.ledger(object_id=doc["id"])] == ["created"]


def test_the_call_shapes_of_the_legacy_sdk(start: Callable[..., Running]) -> None:
    """connect-sdk 22 lists with django-filter parameters and posts actions with a trailing slash."""
    mp = start(generate=30)
    products = sorted(mp.store.products)[:2]
    filters = {"limit": "1000", "status": "pending", "asset.product.id__in": ",".join(products)}
    listed = requests.get(
        f"{mp.server.url}/public/v1/requests",
        params=filters,
        timeout=10,
        headers={"Authorization": DEFAULT_API_KEY, "Content-Type": "application/json"},
    )
    expected = {
        r.id
        for r in mp.store.requests.values()
        if r.status == "pending" and r.asset.product.id in products
    }
    assert {d["id"] for d in listed.json()} == expected
    request = mp.store.requests[sorted(expected)[0]]
    approved = requests.post(
        f"{mp.server.url}/public/v1/requests/{request.id}/approve/",
        timeout=10,
        json={"template_id": template_of(request)},
        headers={"Authorization": DEFAULT_API_KEY},
    )
    assert approved.status_code == 200 and approved.json()["status"] == "approved"


def test_unknown_request_and_action(start: Callable[..., Running]) -> None:
    mp = start(generate=2)
    missing = mp.get("/requests/PR-0000-0000-0000-001")
    assert missing.status_code == 404 and missing.json()["error_code"] == "REQ_001"
    request = next(mp.pending())
    assert mp.act(request.id, "teleport").status_code == 404
    assert (
        mp.act(request.id, "approve/", {"template_id": template_of(request)}).status_code == 200
    )  # legacy SDK slash


# -- conversations, templates, subscriptions --------------------------------------------------------


def test_conversation_and_messages(start: Callable[..., Running]) -> None:
    mp = start(generate=5)
    request = next(mp.pending())
    conversations = mp.get(f"/conversations?instance_id={request.id}").json()
    assert (
        len(conversations) == 1
        and mp.get(f"/conversations?eq(instance_id,{request.id})").json() == conversations
    )
    conversation_id = conversations[0]["id"]
    assert conversation_id.startswith("CO-")
    assert mp.get(f"/conversations/{conversation_id}").json()["instance_id"] == request.id
    posted = mp.call(
        "POST",
        f"/conversations/{conversation_id}/messages",
        {"text": "Terminated at the vendor.", "type": "message"},
    )
    assert posted.status_code == 201 and posted.json()["text"] == "Terminated at the vendor."
    assert (
        mp.call(
            "POST",
            f"/conversations/{conversation_id}/messages",
            {"text": "internal", "type": "private"},
        ).status_code
        == 201
    )
    assert [m["text"] for m in mp.get(f"/conversations/{conversation_id}/messages").json()] == [
        "Terminated at the vendor.",
        "internal",
    ]
    assert (
        mp.call("POST", f"/conversations/{conversation_id}/messages", {"text": ""}).json()[
            "error_code"
        ]
        == "REQ_005"
    )
    assert (
        mp.call(
            "POST", f"/conversations/{conversation_id}/messages", {"text": "x", "type": "shout"}
        ).status_code
        == 400
    )
    assert [(e["event"], e["actor"]) for e in mp.ledger(object_id=request.id)] == [
        ("message", KEY_ID)
    ] * 2


def test_templates_and_products(catalog: Running) -> None:
    product = sorted(catalog.store.products.values(), key=lambda p: p.id)[0]
    templates = catalog.get(
        f"/products/{product.id}/templates?eq(scope,asset)&eq(type,fulfillment)"
    ).json()
    assert templates and templates[0]["id"] == approve_template(product)
    assert all(t["scope"] == "asset" and t["type"] == "fulfillment" for t in templates)
    assert {
        t["type"] for t in catalog.get(f"/products/{product.id}/templates?type=inquire").json()
    } == {"inquire"}
    assert catalog.get(f"/products/{product.id}").json()["name"] == product.name
    assert catalog.get("/products/PRD-000-000-000").status_code == 404


def test_subscription_shape_and_listing(catalog: Running) -> None:
    asset = next(
        a
        for a in catalog.store.assets.values()
        if a.product.billing_period and a.status == "active"
    )
    doc = catalog.get(f"/assets/{asset.id}").json()
    assert doc["status"] == "active" and doc["product"]["id"] == asset.product.id
    assert {p["id"]: p["value"] for p in doc["params"]}["subscription_id"].startswith("SUB-")
    assert all(isinstance(item["quantity"], str) for item in doc["items"])
    assert (
        doc["billing"]["next_date"] > START.isoformat()
        and doc["billing"]["period"]["uom"] == asset.product.billing_period
    )
    assert {"customer", "tier1", "tier2"} <= set(doc["tiers"])
    listed = catalog.call("GET", "/assets?eq(status,active)&limit=1000").json()
    assert {d["id"] for d in listed} == {
        a.id for a in catalog.store.assets.values() if a.status == "active"
    }


# -- authentication, limits, secrets ------------------------------------------------------------


def test_the_api_needs_the_exact_key_and_never_echoes_it(start: Callable[..., Running]) -> None:
    mp = start(generate=3)
    url = mp.server.url + "/public/v1/requests"
    unauthorized = {"error_code": "AUTH_001", "errors": ["API request is unauthorized."]}
    for headers in (
        {},
        {"Authorization": "ApiKey SU-000-000-000:wrong"},
        {"Authorization": SECRET},
        {"Authorization": DEFAULT_API_KEY + " "},
    ):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == unauthorized
    assert mp.admin("GET", "/admin/stats").status_code == 200
    request = next(mp.pending())
    mp.act(request.id, "approve", {"template_id": template_of(request)})
    for path in ("/", "/admin/ledger", "/admin/stats", "/admin/faults", "/healthz"):
        assert SECRET not in mp.admin("GET", path).text


def test_bodies_over_the_limit_are_refused(start: Callable[..., Running]) -> None:
    mp = start(generate=3, max_body_bytes=2048)
    request = next(mp.pending())
    response = mp.act(request.id, "fail", {"reason": "x" * 5000})
    assert response.status_code == 413 and response.json()["error_code"] == "VAL_001"
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    not_json = mp.http.post(
        f"{mp.server.url}/public/v1/requests/{request.id}/fail", data=b"{reason", timeout=10
    )
    assert not_json.status_code == 400


# -- faults -----------------------------------------------------------------------------------


def test_faults_at_start_and_at_run_time(start: Callable[..., Running]) -> None:
    mp = start(generate=6, faults=FaultSettings(error_rate=1.0))
    request = next(mp.pending())
    before = mp.ledger()[-1]["seq"]
    failing = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert failing.status_code == 503 and mp.ledger(before) == []  # refused before acting
    assert (
        mp.admin("GET", "/healthz").status_code == 200
        and mp.admin("GET", "/admin/stats").status_code == 200
    )

    assert (
        mp.admin("PUT", "/admin/faults", json={"throttle_rate": 1.0, "retry_after": 7}).status_code
        == 200
    )
    throttled = mp.get(f"/requests/{request.id}")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"

    mp.admin("PUT", "/admin/faults", json={"drop_rate": 1.0})
    # The response starts, then the connection breaks: requests reports a broken body.
    with pytest.raises(
        (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
    ):
        mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert [(e["kind"], e["to"]) for e in mp.ledger(before, object_id=request.id)] == [
        ("request", "approved")
    ]
    assert mp.store.requests[request.id].status == "approved"

    mp.admin("PUT", "/admin/faults", json={"latency_ms": 1.0})
    delayed = mp.admin("GET", "/admin/stats").json()["faults"]["delayed"]
    assert mp.get(f"/requests/{request.id}").json()["status"] == "approved"
    assert mp.admin("GET", "/admin/stats").json()["faults"]["delayed"] == delayed + 1
    assert mp.admin("GET", "/admin/faults").json()["latency_ms"] == 1.0

    bad = mp.admin("PUT", "/admin/faults", json={"error_rate": 2})
    assert bad.status_code == 400 and mp.admin("GET", "/admin/faults").json()["latency_ms"] == 1.0
    assert mp.admin("PUT", "/admin/faults", json={}).json()["latency_ms"] == 0.0


def test_share_of_errors_follows_the_rate(start: Callable[..., Running]) -> None:
    mp = start(generate=2, faults=FaultSettings(error_rate=0.3, seed=1))
    request = next(mp.pending())
    codes = Counter(mp.get(f"/requests/{request.id}").status_code for _ in range(200))
    assert set(codes) == {200, 503} and 30 <= codes[503] <= 90


# -- persistence ----------------------------------------------------------------------------------


def test_state_survives_a_restart_with_a_state_file(
    start: Callable[..., Running], tmp_path: Path, clock: MockClock
) -> None:
    state = tmp_path / "marketplace.sqlite"
    first = start(generate=12, state_file=state)
    requests_ = list(first.pending())
    first.act(requests_[0].id, "approve", {"template_id": template_of(requests_[0])})
    first.act(requests_[1].id, "fail", {"reason": "No."})
    first.act(requests_[2].id, "assign", {"email": "agent@vendor.example"})
    first.act(
        requests_[3].id, "schedule", {"planned_date": (START + timedelta(hours=1)).isoformat()}
    )
    conversation = first.get(f"/conversations?instance_id={requests_[2].id}").json()[0]["id"]
    first.call("POST", f"/conversations/{conversation}/messages", {"text": "Kept."})
    active = next(a for a in first.store.assets.values() if a.status == "active")
    created = first.call(
        "POST", "/requests", {"type": "cancel", "asset": {"id": active.id}}
    ).json()["id"]
    snapshot = {
        path: first.get(path).json()
        for path in (
            f"/requests/{requests_[0].id}",
            f"/requests/{requests_[2].id}",
            f"/requests/{created}",
            f"/assets/{requests_[1].asset.id}",
            f"/conversations/{conversation}/messages",
        )
    }
    ledger, stats = first.ledger(), first.admin("GET", "/admin/stats").json()
    first.server.stop()

    second = start(generate=500, state_file=state)  # the file wins over generating
    assert {path: second.get(path).json() for path in snapshot} == snapshot
    assert second.ledger() == ledger
    assert {
        k: v for k, v in second.admin("GET", "/admin/stats").json().items() if k != "faults"
    } == {k: v for k, v in stats.items() if k != "faults"}
    second.act(requests_[4].id, "fail", {"reason": "After restart."})
    assert second.ledger()[-2]["seq"] == ledger[-1]["seq"] + 1
    clock.advance(3600)
    assert second.get(f"/requests/{requests_[3].id}").json()["status"] == "pending"


# -- seeding and generation --------------------------------------------------------------------------


def test_the_example_seed_file_loads(start: Callable[..., Running]) -> None:
    mp = start(seed_file=REPO / "config" / "seed.example.yaml")
    store = mp.store
    # PRD-555-666-777 comes with the imported Connect request (connect_requests).
    assert {"PRD-123-456-789", "PRD-987-654-321", "PRD-555-666-777"} == set(store.products)
    first = mp.get("/requests/PR-1000-2000-3001-002").json()
    assert first["status"] == "pending" and first["asset"]["status"] == "terminating"
    assert {p["id"]: p["value"] for p in first["asset"]["params"]}[
        "cancellation_reason"
    ] == "too_expensive"
    assert (
        first["asset"]["items"][0]["mpn"] == "BACKUP-PREMIUM"
        and first["asset"]["items"][0]["quantity"] == "25"
    )
    tied = [d for d in mp.get("/requests?eq(created,2025-01-10T08:00:00+00:00)").json()]
    assert len(tied) == 2
    preview = mp.get("/assets/AS-1000-2000-3003").json()
    assert preview["connection"]["id"] == "CT-0000-0000-0000"
    assert mp.get("/assets/AS-1000-2000-3004").json()["status"] == "active"
    assert approve_template(store.products["PRD-123-456-789"]) == "TL-123-456-789"
    assert (
        sum(1 for r in store.requests.values() if r.type == "cancel" and r.status == "pending")
        == 2 + 20 + 1
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "subscriptions:\n  - {product: PRD-000-000-000}\n",
            "subscriptions[0].product: unknown product",
        ),
        (
            "requests:\n  - {subscription: AS-1-2-3}\n",
            "requests[0].subscription: unknown subscription",
        ),
        ("products:\n  - {name: X, items: []}\n", "products[0].items"),
        ("produce: []\n", "unknown top-level key"),
        ("products: [\n", "not valid YAML"),
    ],
)
def test_a_bad_seed_file_names_the_entry(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(content)
    with pytest.raises(SeedError, match=message.replace("[", r"\[").replace("]", r"\]")):
        create_app(MarketplaceSettings(seed_file=path, clock=MockClock(START)))


def _summary(store: Store) -> list[tuple[str, str, str, str, dict[str, str]]]:
    return sorted(
        (r.id, r.status, r.created.isoformat(), r.asset.params.get("subscription_id", ""), r.params)
        for r in store.requests.values()
    )


def test_generation_is_deterministic_and_varied() -> None:
    def made(seed: int) -> Store:
        return create_app(
            MarketplaceSettings(generate=200, seed=seed, clock=MockClock(START))
        ).store

    store = made(21)
    assert _summary(store) == _summary(made(21))
    assert {r.id for r in store.requests.values()}.isdisjoint(
        {r.id for r in made(22).requests.values()}
    )
    cancels = [r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"]
    assert len(cancels) == 200
    assert (
        len({r.asset.product.id for r in cancels}) >= 3
        and len({r.asset.marketplace["id"] for r in cancels}) >= 3
    )
    assert {r.asset.connection["type"] for r in cancels} == {"production", "test", "preview"}
    assert all(
        r.asset.connection["id"] == "CT-0000-0000-0000"
        for r in cancels
        if r.asset.connection["type"] == "preview"
    )
    assert max(Counter(r.asset.tiers["customer"]["id"] for r in cancels).values()) >= 3
    with_reason = [r for r in cancels if r.params.get("cancellation_reason")]
    assert 0 < len(with_reason) < len(cancels)
    assert max(Counter(r.created for r in cancels).values()) >= 2
    assert {r.type for r in store.requests.values()} >= {"cancel", "purchase"}
    assert {r.status for r in store.requests.values()} >= {
        "pending",
        "approved",
        "failed",
        "scheduled",
    }
    assert any(mpn.endswith("PREMIUM") for r in cancels for mpn, _q, _o in r.asset.items)
    assert all(r.asset.status == "terminating" for r in cancels)
    for product in store.products.values():
        template = product.template(approve_template(product))
        assert template is not None and (template["scope"], template["type"]) == (
            "asset",
            "fulfillment",
        )


def test_serializer_matches_the_rendered_objects() -> None:
    store = create_app(MarketplaceSettings(generate=60, seed=4, clock=MockClock(START))).store
    request = next(r for r in store.requests.values() if r.status == "pending")
    request.assignee = {"id": "UR-1-2-3", "name": "Agent", "email": "a@b.c"}
    serializer = Serializer()
    for record in store.requests.values():
        assert json.loads(serializer.request(record)) == render_request(record)
        assert json.loads(serializer.request(record, ["asset", "activation_key"])) == {
            k: v for k, v in render_request(record).items() if k not in ("asset", "activation_key")
        }
    for asset in store.assets.values():
        assert json.loads(serializer.asset(asset)) == render_asset(asset)


# -- admin endpoints and the web page ---------------------------------------------------------------


def test_admin_seed_clock_stats_and_ledger(start: Callable[..., Running]) -> None:
    mp = start(generate=5)
    created = mp.admin("POST", "/admin/seed", json={"generate": 7}).json()
    assert created["count"] == 7 and all(
        mp.store.requests[i].status == "pending" for i in created["created"]
    )
    stats = mp.admin("GET", "/admin/stats").json()
    assert stats["cancels_by_status"]["pending"] == 12 and stats["requests"] == len(
        mp.store.requests
    )
    assert mp.admin("POST", "/admin/seed", json={"generate": -1}).status_code == 400
    now = mp.admin("POST", "/admin/clock", json={"advance": 90}).json()["now"]
    assert now == (START + timedelta(seconds=90)).isoformat()
    assert (
        mp.admin("POST", "/admin/clock", json={"set": "2026-01-01T00:00:00Z"}).json()["now"]
        == "2026-01-01T00:00:00+00:00"
    )
    entries = mp.ledger()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert mp.ledger(since=entries[-2]["seq"]) == entries[-1:]
    assert mp.admin("GET", "/admin/ledger", params={"since": "x"}).status_code == 400


def test_clock_endpoint_refuses_a_real_clock(start: Callable[..., Running]) -> None:
    from processor.mock.marketplace.clock import utc_now

    mp = start(generate=1, clock=utc_now)
    assert mp.admin("POST", "/admin/clock", json={"advance": 5}).status_code == 409


def test_web_page_lists_and_cancels_like_the_connect_ui(start: Callable[..., Running]) -> None:
    mp = start(generate=20)
    active = next(a for a in reversed(mp.store.assets.values()) if a.status == "active")
    page = mp.admin("GET", "/")
    assert page.status_code == 200 and "Cancel subscription" in page.text and active.id in page.text
    only_failed = mp.admin("GET", "/", params={"request_status": "failed"}).text
    failed = [r.id for r in mp.store.requests.values() if r.status == "failed"]
    pending = [r.id for r in mp.store.requests.values() if r.status == "pending"]
    assert all(i in only_failed for i in failed) and not any(i in only_failed for i in pending)
    response = mp.admin(
        "POST",
        f"/ui/subscriptions/{active.id}/cancel",
        data={"cancellation_reason": "too_expensive"},
        allow_redirects=False,
    )
    assert response.status_code == 303 and "created=PR-" in response.headers["location"]
    request_id = response.headers["location"].split("created=")[1]
    doc = mp.get(f"/requests/{request_id}").json()
    assert doc["status"] == "pending" and doc["asset"]["status"] == "terminating"
    assert {p["id"]: p["value"] for p in doc["asset"]["params"]}[
        "cancellation_reason"
    ] == "too_expensive"
    assert mp.ledger(object_id=request_id)[0]["actor"] == "ui"
    again = mp.admin("POST", f"/ui/subscriptions/{active.id}/cancel", allow_redirects=False)
    assert again.status_code == 303 and "error=" in again.headers["location"]


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_serves_and_says_what_it_serves(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "processor",
            "mock-marketplace",
            "--port",
            str(port),
            "--generate",
            "5",
            "--state-file",
            str(tmp_path / "state.sqlite"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = [process.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}" in banner[0] and "SU-000-000-000" in banner[1]
        assert SECRET not in "".join(banner)
        for _ in range(100):  # the banner comes before uvicorn listens
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert health.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(10)
    assert (tmp_path / "state.sqlite").exists()


def test_a_bad_seed_file_stops_the_command_with_status_2(tmp_path: Path) -> None:
    import argparse

    from processor.mock.marketplace import cli

    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    (tmp_path / "bad.yaml").write_text("subscriptions:\n  - {product: PRD-000-000-000}\n")
    assert cli.run(parser.parse_args(["--seed-file", str(tmp_path / "bad.yaml")])) == 2
