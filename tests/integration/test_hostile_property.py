"""Properties of the boundary, over generated hostile pages and objects.

- Any bytes a listing could carry: :func:`processor.marketplace.boundary.parse_json` returns a
  value or raises :class:`Unreadable`, and :func:`processor.model.parse_request` over each row
  returns a request or raises :class:`MalformedRequest`: nothing else.
- A daemon pass through the real gateway, over HTTP, against a stand-in serving a generated page:
  the pass never raises, and every path Connect receives has only segments that are ids of their
  kind (``requests/<PR->/<action>``, ``conversations/<CO->/...``).
- The http adapter over generated field values: it sends nothing, or it sends a URL whose path
  segments are valid values of their kind.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.adapters.base import Failed, VendorCall, with_default_check
from processor.adapters.http import HttpAdapter
from processor.daemon.core import Daemon
from processor.engine.core import Engine
from processor.journal import open_journal
from processor.marketplace import ConnectGateway, GatewaySettings, Selector
from processor.marketplace.boundary import Unreadable, parse_json
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import Metrics
from processor.ops.serving import ServerThread
from processor.urls import connect_id_problem, segment_problem

from ..fakes import Clock, ScriptedAdapter
from ..hostile_connect import Answer, HostileConnect, row
from ..unit.test_engine import PRODUCT, make_config

HOSTILE_TEXT = st.sampled_from(
    [
        "../requests/PR-1",
        "PR-../../x",
        "PR-1%2F2",
        "PR-1/approve",
        "PR-1 2",
        "PR-\u00fc",
        "PR-1\x00",
        "PR-\ud800",
        "PR-" + "9" * 300,
        " PR-1 ",
        "..",
        ".",
        "",
        "Infinity",
        "NaN",
        "-12",
        "%2e%2e",
        "SUB-1\r\nX-Injected: 1",
        "SUB\\1",
        "x" * 5000,
        "\ud800",
        "PR-1\udfff",
    ]
) | st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**40), 10**40)
    | st.floats()  # NaN and infinities included: they must never get past the boundary
    | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)
PATHS = [
    "id",
    "created",
    "status",
    "asset",
    "asset.id",
    "asset.product",
    "asset.product.id",
    "asset.params",
    "asset.external_id",
    "asset.items",
    "asset.tiers",
    "marketplace",
    "marketplace.id",
]


@st.composite
def rows(draw: st.DrawFn) -> Any:
    """A cancel request of the configured product with a few fields replaced by hostile
    values, a valid one, or any JSON value at all."""
    number = draw(st.integers(0, 999))
    base = row(f"PR-1000-2000-3000-{number:03d}", **{"asset.product.id": PRODUCT})
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(VALUES)
    for _ in range(kind if kind < 3 else 0):
        key = draw(st.sampled_from(PATHS))
        *path, last = key.split(".")
        node: Any = base
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[last] = draw(VALUES | HOSTILE_TEXT)
    if draw(st.booleans()) and isinstance(base.get("asset"), dict):
        value = draw(HOSTILE_TEXT)
        base["asset"]["params"] = [{"id": "subscription_id", "value": value}]
    return base


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """The bytes of a listing: JSON of generated rows (NaN allowed), sometimes cut, nested deep,
    given a duplicate key, or not UTF-8."""
    text = json.dumps(draw(st.lists(rows(), max_size=4)), allow_nan=True)
    bent = draw(st.integers(0, 6))
    if bent == 1:
        text = text[: draw(st.integers(0, len(text)))]
    elif bent == 2:
        depth = draw(st.integers(60, 3000))
        text = "[" * depth + text + "]" * depth
    elif bent == 3:
        text = text.replace('{"id": ', '{"id": "PR-1", "id": ', 1)
    data = text.encode("utf-8", "surrogatepass")
    if bent == 4:
        data += b"\xff"
    return data


RANGES = st.sampled_from(
    [None, "items 0-0/NaN", "items 0-9/Infinity", "items 0-1/-5", "garbage", "items 0-0/1"]
)


@settings(max_examples=200, deadline=None)
@given(body=bodies())
def test_the_boundary_and_the_model_refuse_only_with_their_own_errors(body: bytes) -> None:
    try:
        value = parse_json(body)
    except Unreadable as refused:
        assert str(refused)
        return
    # What the boundary lets through is text every file, log, database and vendor can encode:
    # a lone surrogate ("\\ud800", valid JSON) arrives as U+FFFD.
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    for item in value if isinstance(value, list) else [value]:
        try:
            request = parse_request(item)
        except MalformedRequest as malformed:
            assert malformed.problem and len(malformed.problem) < 400
            continue
        assert isinstance(request, CancelRequest)
        assert connect_id_problem("request", request.id) is None
        assert connect_id_problem("asset", request.asset_id) is None
        assert all(len(v) <= 4000 for v in request.params.values())


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[HostileConnect, str]]:
    hostile = HostileConnect()
    with ServerThread(hostile.app) as server:
        yield hostile, f"{server.url}/public/v1"


_KIND_OF = {"requests": "request", "conversations": "conversation", "assets": "asset"}
_ACTIONS = {"approve", "fail", "schedule", "confirm", "assign", "inquire", "messages"}


def _path_segments_valid(raw_path: str) -> str | None:
    """Why a path Connect received is not ``<collection>/<id of its kind>[/<action>]``."""
    parts = raw_path.removeprefix("/public/v1/").split("/")
    collection, rest = parts[0], parts[1:]
    if not rest:
        return None
    kind = _KIND_OF.get(collection)
    if kind is None:
        return f"unexpected collection {collection!r}"
    problem = connect_id_problem(kind, unquote(rest[0]))
    if problem is not None or unquote(rest[0]) != rest[0]:
        return f"{raw_path}: {problem or 'encoded'}"
    if rest[1:] and rest[1] not in _ACTIONS:
        return f"{raw_path}: unexpected action {rest[1]!r}"
    return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=bodies(), total=RANGES)
def test_a_daemon_pass_over_any_page_never_raises_and_sends_only_valid_segments(
    stand_in: tuple[HostileConnect, str], body: bytes, total: str | None
) -> None:
    hostile, endpoint = stand_in
    headers = {"Content-Range": total} if total else {}
    mark = hostile.serve(Answer(body, headers=headers))
    gateway = ConnectGateway(
        GatewaySettings(
            endpoint=endpoint,
            api_key="ApiKey SU-000-000-000:property-secret",
            max_attempts=1,
            backoff_base=0.01,
            backoff_max=0.01,
            page_size=5,
        )
    )
    adapter = with_default_check(ScriptedAdapter())  # as the registry loads every adapter
    with tempfile.TemporaryDirectory() as scratch:
        clock = Clock()
        journal = open_journal(f"sqlite:///{Path(scratch) / 'journal.db'}", clock=clock)
        journal.migrate()
        engine = Engine(
            config=make_config(concurrency=2, once_max_wait=0, notes=False),
            journal=journal,
            marketplace=gateway,
            adapters={"vendor": adapter},  # type: ignore[dict-item]
            owner="worker-1",
            metrics=Metrics(),
            clock=clock,
        )
        try:
            Daemon(engine, gateway, Selector(products=(PRODUCT,)), once=True).run()
        finally:
            journal.close()
            gateway.close()
    for method, raw_path in hostile.raw_since(mark):
        problem = _path_segments_valid(raw_path)
        assert problem is None, (method, problem)
    for _, call in adapter.calls:
        assert segment_problem("subscription", call.subscription_id) is None, call.subscription_id


BASE = "http://vendor.test"
TEMPLATE = "/v1/{environment}/subs/{subscription_id}/{request_id}/{params.region}/end"


def _fields_call(values: dict[str, str]) -> VendorCall:
    request = CancelRequest(
        id=values["request_id"],
        type="cancel",
        status="pending",
        asset_id="AS-1",
        product_id="PRD-1",
        environment=values["environment"],
        params={"region": values["region"]},
    )
    return VendorCall(request, values["subscription_id"], "cancel-key", reason_comment="x" * 5000)


@settings(max_examples=200, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {
            "request_id": HOSTILE_TEXT | st.just("PR-1000-2000-3000-001"),
            "subscription_id": HOSTILE_TEXT | st.just("SUB-1"),
            "environment": HOSTILE_TEXT | st.just("production"),
            "region": HOSTILE_TEXT | st.just("eu-1"),
        }
    )
)
def test_the_http_adapter_sends_only_urls_whose_segments_are_valid(values: dict[str, str]) -> None:
    http = HttpAdapter({"base_url": BASE, "terminate": {"path": TEMPLATE, "success_field": None}})
    kinds = ["vendor", "subscription", "request", "vendor"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        vendor.add(responses.POST, re.compile(r"http://vendor\.test/.*"), json={})
        outcome = http.terminate(_fields_call(values))
        if not vendor.calls:
            assert isinstance(outcome, Failed) and "nothing was sent" in outcome.detail
            return
        sent = vendor.calls[0].request
        body = json.loads(sent.body or b"{}")
    parts = urlsplit(sent.url).path.split("/")
    assert parts[:2] == ["", "v1"] and parts[3] == "subs" and parts[-1] == "end"
    for kind, part in zip(kinds, [parts[2], parts[4], parts[5], parts[6]], strict=True):
        assert segment_problem(kind, unquote(part)) is None, (kind, part)
    assert len(body.get("comment", "")) <= 1000  # customer text cut to the adapter's size
