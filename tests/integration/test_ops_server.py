"""The ops server over real HTTP (uvicorn on a loopback port) against a real SQLite journal file:
probes, metrics, the status page and its Retry button, the token, size limits and secret masking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.config.schema import Config, ConfigError
from processor.engine.circuit import CircuitBreaker
from processor.journal import open_journal
from processor.journal.base import Journal, State
from processor.observe import Metrics, register_secret
from processor.ops.guard import COOKIE
from processor.ops.listing import Filters, newest, streamed, why_waiting
from processor.ops.readiness import CachedCheck, is_ready, make_readiness
from processor.ops.server import OpsServer, build_ops_server, create_ops_app

TOKEN = "ops-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def put(
    journal: Journal,
    request_id: str,
    state: State,
    *,
    product: str = "PRD-100-200-300",
    subscription: str | None = None,
    detail: str | None = None,
    **fields: Any,
) -> None:
    """A request in ``state`` the way the engine leaves it: ensured, claimed, moved, released."""
    journal.ensure(
        request_id,
        idempotency_key=f"cancel-{request_id}",
        product_id=product,
        subscription_id=subscription or f"SUB-{request_id[3:]}",
        environment="production",
    )
    if state is State.NEW and not fields:
        return
    claim = journal.claim(request_id, "worker-1", 60)
    assert claim is not None
    claim = journal.transition(claim, state, detail=detail, **fields)
    journal.release(claim)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    store = open_journal(f"sqlite:///{tmp_path / 'journal.db'}", clock=clock)
    store.migrate()
    yield store
    store.close()


def ready(journal: Journal) -> Callable[[], dict[str, Any]]:
    return make_readiness(journal=journal)


@pytest.fixture
def serve(journal: Journal) -> Iterator[Callable[..., httpx.Client]]:
    """``serve(**create_ops_app options)`` -> an HTTP client on a freshly started server."""
    started: list[tuple[OpsServer, httpx.Client]] = []

    def start(**options: Any) -> httpx.Client:
        options = {
            "journal": journal,
            "metrics": Metrics(),
            "readiness": ready(journal),
            "token": None,
            "bound_to_loopback": True,
            **options,
        }
        server = OpsServer(create_ops_app(**options), port=0).start()
        client = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.stop()


def section(html: str, anchor: str) -> str:
    """The part of the page from the heading with id ``anchor`` to the next heading."""
    start = html.index(f'id="{anchor}"')
    end = html.find("<h2", start)
    return html[start:] if end < 0 else html[start:end]


def listed(html: str) -> list[str]:
    return re.findall(r'<tr data-request="([^"]+)"', html)


# -- probes and metrics ---------------------------------------------------------------------------


def test_healthz_answers_ok(serve: Callable[..., httpx.Client]) -> None:
    response = serve().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_200_when_every_check_passes_and_503_when_a_circuit_is_open(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    breakers = {
        "vendor": CircuitBreaker("vendor", failures=2),
        "backup": CircuitBreaker("backup", failures=2),
    }
    client = serve(
        readiness=make_readiness(journal=journal, connect=lambda: True, breakers=breakers)
    )
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "journal": True,
        "connect": True,
        "circuits": {"backup": "closed", "vendor": "closed"},
    }

    breakers["vendor"].failure()
    breakers["vendor"].failure()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["circuits"] == {"backup": "closed", "vendor": "open"}


def test_readyz_is_503_when_the_journal_or_connect_fails(
    serve: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    broken = open_journal(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    try:

        def connect() -> bool:
            raise ConnectionError("Connect is unreachable")

        client = serve(readiness=make_readiness(journal=broken, connect=connect))
        response = client.get("/readyz")
    finally:
        broken.close()
    assert response.status_code == 503
    body = response.json()
    assert (body["journal"], body["connect"]) == (False, False)
    assert "journal migrate" in body["errors"]["journal"]
    assert body["errors"]["connect"] == "ConnectionError: Connect is unreachable"


def test_readyz_is_503_when_the_readiness_callable_itself_fails(
    serve: Callable[..., httpx.Client],
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no gateway yet")

    response = serve(readiness=broken).get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"error": "RuntimeError: no gateway yet"},
    )


def test_metrics_are_prometheus_text_and_the_parked_gauge_follows_the_journal(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    metrics = Metrics()
    metrics.outcomes.labels(outcome="approved").inc(3)
    client = serve(metrics=metrics)
    put(journal, "PR-0001", State.PARKED, reason="ambiguous")
    put(journal, "PR-0002", State.PARKED, reason="ambiguous")
    put(journal, "PR-0003", State.APPROVED)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "cancel_requests_total",
        "cancel_vendor_call_seconds",
        "cancel_backlog",
        "cancel_parked",
        "cancel_vendor_circuit_open",
        "cancel_poll_passes_total",
    ):
        assert f"# TYPE {name}" in text
    assert 'cancel_requests_total{outcome="approved"} 3.0' in text
    assert "\ncancel_parked 2.0\n" in text

    journal.force("PR-0001", State.NEW, detail="retry", actor="test")
    assert "\ncancel_parked 1.0\n" in client.get("/metrics").text


# -- the status page ------------------------------------------------------------------------------


@pytest.fixture
def mixed(journal: Journal, clock: Clock) -> Journal:
    """Eight requests across states, products and ages (PR-0001 oldest ... PR-0008 newest)."""
    rows = [
        ("PR-0001", State.APPROVED, "PRD-A", {"outcome": "terminated"}),
        (
            "PR-0002",
            State.FAILED,
            "PRD-A",
            {"outcome": "refused", "reason": "contract still running"},
        ),
        (
            "PR-0003",
            State.PARKED,
            "PRD-B",
            {"reason": "the vendor offers neither idempotency nor a status read"},
        ),
        (
            "PR-0004",
            State.TERMINATING,
            "PRD-B",
            {"attempts": 2, "last_error": "vendor answered 503"},
        ),
        (
            "PR-0005",
            State.WAITING_HUMAN,
            "PRD-A",
            {"reason": "enterprise plan: account manager decides"},
        ),
        ("PR-0006", State.PARKED, "PRD-A", {"reason": "no approve template for the product"}),
        ("PR-0007", State.NEW, "PRD-B", {}),
        ("PR-0008", State.APPROVED, "PRD-B", {"outcome": "already_gone"}),
    ]
    for request_id, state, product, fields in rows:
        clock.now += timedelta(minutes=1)
        put(journal, request_id, state, product=product, detail=fields.get("reason"), **fields)
    return journal


def test_the_page_counts_by_state_and_lists_the_newest_requests_first(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    response = serve().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    tiles = dict(re.findall(r'data-state="(\w+)"><b>(\d+)</b>', html))
    assert {state: int(n) for state, n in tiles.items() if n != "0"} == {
        "approved": 2,
        "failed": 1,
        "parked": 2,
        "terminating": 1,
        "waiting_human": 1,
        "new": 1,
    }
    recent = section(html, "recent")
    assert listed(recent) == [f"PR-000{n}" for n in range(8, 0, -1)]
    assert "vendor answered 503" in recent and "contract still running" in recent


def test_the_page_lists_parked_requests_with_a_retry_button_and_those_waiting_for_a_person(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    html = serve().get("/").text
    parked, waiting = section(html, "parked"), section(html, "waiting")
    assert listed(parked) == ["PR-0006", "PR-0003"]
    assert "no approve template for the product" in parked
    assert re.findall(r'data-retry="([^"]+)"', parked) == ["PR-0006", "PR-0003"]
    assert listed(waiting) == ["PR-0005"]
    assert "account manager decides" in waiting
    assert "data-retry" not in waiting and "data-retry" not in section(html, "recent")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "approved"}, ["PR-0008", "PR-0001"]),
        ({"product": "PRD-A"}, ["PR-0006", "PR-0005", "PR-0002", "PR-0001"]),
        ({"q": "sub-0004"}, ["PR-0004"]),  # a subscription id, case-insensitive
        ({"q": "pr-000", "state": "parked", "product": "PRD-B"}, ["PR-0003"]),
        ({"q": "PR-9999"}, []),
    ],
)
def test_the_page_filters_by_state_product_and_id(
    serve: Callable[..., httpx.Client], mixed: Journal, query: dict[str, str], expected: list[str]
) -> None:
    html = serve().get("/", params=query).text
    assert listed(section(html, "recent")) == expected
    for value in query.values():  # the form shows what was asked for
        assert value in html


def test_an_unknown_state_filter_is_a_400_naming_the_states(
    serve: Callable[..., httpx.Client],
) -> None:
    response = serve().get("/", params={"state": "lost"})
    assert response.status_code == 400
    assert "unknown state" in response.text and "waiting_human" in response.text


def test_a_request_page_shows_its_record_and_timeline_in_order(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    put(journal, "PR-0042", State.NEW)
    claim = journal.claim("PR-0042", "worker-1", 60)
    assert claim is not None
    claim = journal.transition(
        claim, State.TERMINATING, attempts=1, detail="intent: terminate via vendor"
    )
    claim = journal.transition(
        claim,
        State.PARKED,
        detail="the vendor call may have acted",
        reason="the vendor call may have acted",
        last_error="read timeout",
    )
    client = serve()
    response = client.get("/requests/PR-0042")
    assert response.status_code == 200
    html = response.text
    rows = re.findall(r'<tr><td class="t">[^<]*</td><td>(.*?)</td><td>(.*?)</td>', html)
    steps = [(re.sub("<[^>]+>", "", a), re.sub("<[^>]+>", "", b)) for a, b in rows]
    assert steps == [("new", "terminating"), ("terminating", "parked")]
    assert "intent: terminate via vendor" in html and "read timeout" in html
    assert 'data-retry="PR-0042"' in html  # parked: the button is there
    assert client.get("/requests/PR-404").status_code == 404


def test_retry_moves_a_parked_request_to_new_and_redirects_back(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve()
    response = client.post(
        "/requests/PR-0003/retry",
        data={"next": "/?product=PRD-B"},
        headers={"origin": str(client.base_url).rstrip("/")},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/?product=PRD-B&retried=PR-0003"
    record = mixed.get("PR-0003")
    assert record is not None and record.state is State.NEW
    last = mixed.transitions("PR-0003")[-1]
    assert (last.from_state, last.to_state, last.owner) == (State.PARKED, State.NEW, "status-page")

    page = client.get(response.headers["location"]).text
    assert "PR-0003 was sent back to new" in page
    assert "PR-0003" not in listed(section(page, "parked"))


def test_retry_refuses_final_requests_and_redirects_only_within_the_site(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve()
    refused = client.post("/requests/PR-0001/retry")
    assert refused.status_code == 409 and "final state" in refused.text
    moved = client.post("/requests/PR-0006/retry", data={"next": "//evil.example/steal"})
    assert moved.headers["location"] == "/?retried=PR-0006"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"referer": "http://evil.example/page"},
        {"sec-fetch-site": "cross-site"},
    ],
)
def test_retry_refuses_posts_from_another_site(
    serve: Callable[..., httpx.Client], mixed: Journal, headers: dict[str, str]
) -> None:
    response = serve().post("/requests/PR-0003/retry", headers=headers)
    assert response.status_code == 403
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]


def test_retry_is_post_only(serve: Callable[..., httpx.Client], mixed: Journal) -> None:
    assert serve().get("/requests/PR-0003/retry").status_code == 405
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]


# -- protection ------------------------------------------------------------------------------------


def test_an_app_not_bound_to_loopback_needs_a_long_enough_token(journal: Journal) -> None:
    base = {"journal": journal, "metrics": Metrics(), "readiness": ready(journal)}
    with pytest.raises(ValueError, match="token is required"):
        create_ops_app(**base, token=None, bound_to_loopback=False)
    with pytest.raises(ValueError, match="at least 16"):
        create_ops_app(**base, token="short", bound_to_loopback=False)


def test_with_a_token_every_page_needs_it_but_the_probes_do_not(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve(token=TOKEN, bound_to_loopback=False)
    for path in ("/", "/metrics", "/requests/PR-0003"):
        refused = client.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/requests/PR-0003/retry").status_code == 401
    assert (
        client.get("/", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code
        == 401
    )
    assert client.get("/", params={"token": "wrong-token-0123456789"}).status_code == 401
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]

    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    bearer = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200 and "cancel_parked" in bearer.text


def test_a_token_in_the_query_sets_an_httponly_cookie_and_leaves_the_url(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve(token=TOKEN, bound_to_loopback=False)
    signed_in = client.get("/", params={"state": "parked", "token": TOKEN})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/?state=parked"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie  # the cookie holds a keyed digest, not the token

    page = client.get("/?state=parked")  # httpx keeps the cookie, as a browser would
    assert page.status_code == 200
    assert listed(section(page.text, "recent")) == ["PR-0006", "PR-0003"]
    assert TOKEN not in page.text
    assert client.post("/requests/PR-0003/retry").status_code == 303
    assert mixed.get("PR-0003").state is State.NEW  # type: ignore[union-attr]

    forged = httpx.get(f"{client.base_url}/", cookies={COOKIE: "0" * 64})
    assert forged.status_code == 401


def test_on_loopback_the_host_header_must_name_loopback(serve: Callable[..., httpx.Client]) -> None:
    client = serve()
    assert client.get("/", headers={"host": "rebound.example"}).status_code == 421
    assert client.get("/healthz", headers={"host": "localhost:9464"}).status_code == 200


def test_bodies_over_64_kib_are_refused_with_413(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve()
    big = b"next=/&pad=" + b"x" * (64 * 1024)
    assert client.post("/requests/PR-0003/retry", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(80):
            yield b"x" * 1024

    assert client.post("/requests/PR-0003/retry", content=chunks()).status_code == 413
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]


def test_oversized_request_headers_are_refused(serve: Callable[..., httpx.Client]) -> None:
    response = serve().get("/", headers={"x-padding": "y" * (20 * 1024)})
    assert response.status_code == 431


def test_secrets_are_masked_and_everything_is_escaped(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    secret = "vendor-key-5f2b9c7d1e3a"
    register_secret(secret)
    put(
        journal,
        "PR-0100",
        State.PARKED,
        detail=f"gave up: 401 for key {secret}",
        reason=f"gave up after 5 vendor errors: 401 for key {secret}",
        last_error=f"401 Unauthorized ({secret})",
    )
    put(journal, "PR-0101", State.TERMINATING, last_error="<script>alert('x')</script>")
    client = serve()
    pages = [
        client.get("/").text,
        client.get("/requests/PR-0100").text,
        client.get("/?q=PR-01").text,
    ]
    for html in pages:
        assert secret not in html
        assert "<script>alert" not in html
    assert "401 Unauthorized (***)" in pages[0]
    assert "gave up: 401 for key ***" in pages[1]
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in pages[0]


def test_pages_forbid_other_scripts_and_framing(serve: Callable[..., httpx.Client]) -> None:
    response = serve().get("/")
    policy = response.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in response.text
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_journal_that_fails_makes_the_page_503_but_not_the_health_probe(
    serve: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    unmigrated = open_journal(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        client = serve(journal=unmigrated, readiness=ready(unmigrated))
        page = client.get("/")
        assert page.status_code == 503 and "journal migrate" in page.text
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
    finally:
        unmigrated.close()


# -- configuration -----------------------------------------------------------------------------------


def test_build_ops_server_follows_the_http_configuration(journal: Journal) -> None:
    parts = {"journal": journal, "metrics": Metrics(), "readiness": ready(journal)}

    def config(**http: Any) -> Config:
        return Config.model_validate({"http": http})

    assert build_ops_server(config(enabled=False), **parts, environ={}) is None
    assert isinstance(build_ops_server(config(host="127.0.0.1"), **parts, environ={}), OpsServer)
    with pytest.raises(ConfigError, match="CANCEL_PROCESSOR_STATUS_TOKEN"):
        build_ops_server(config(host="0.0.0.0"), **parts, environ={})
    with pytest.raises(ConfigError, match="shorter than 16"):
        build_ops_server(
            config(host="0.0.0.0", token_env="OPS_TOKEN"), **parts, environ={"OPS_TOKEN": "abc"}
        )
    exposed = build_ops_server(
        config(host="0.0.0.0", token_env="OPS_TOKEN"), **parts, environ={"OPS_TOKEN": TOKEN}
    )
    assert isinstance(exposed, OpsServer)


def test_a_configured_loopback_server_serves_and_stops(journal: Journal) -> None:
    config = Config.model_validate({"http": {"host": "127.0.0.1", "port": 0}})
    server = build_ops_server(
        config, journal=journal, metrics=Metrics(), readiness=ready(journal), environ={}
    )
    assert server is not None
    with server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


# -- what the page selects ------------------------------------------------------------------------------


def test_newest_is_exact_across_windows_and_bounded_by_max_scan(
    journal: Journal, clock: Clock
) -> None:
    start = clock.now
    ages = {
        "PR-A": timedelta(days=40),
        "PR-B": timedelta(days=3),
        "PR-C": timedelta(minutes=30),
        "PR-D": timedelta(hours=5),
        "PR-E": timedelta(days=10),
    }
    for request_id, before in ages.items():
        clock.now = start - before
        put(journal, request_id, State.APPROVED)
    clock.now = start

    def ids(**options: Any) -> list[str]:
        return [r.request_id for r in newest(journal, now=lambda: start, **options).records]

    assert ids(limit=1) == ["PR-C"]
    assert ids(limit=3) == ["PR-C", "PR-D", "PR-B"]
    assert ids(limit=10) == ["PR-C", "PR-D", "PR-B", "PR-E", "PR-A"]
    assert ids(limit=2, filters=Filters(text="pr-a")) == ["PR-A"]
    truncated = newest(journal, limit=10, max_scan=2, now=lambda: start)
    assert truncated.truncated and truncated.scanned == 2


def test_why_waiting_prefers_the_latest_move_into_parked(journal: Journal) -> None:
    put(journal, "PR-1", State.PARKED, detail="engine: ambiguous", reason="engine: ambiguous")
    journal.force("PR-1", State.NEW, detail="retry", actor="ops")
    journal.force("PR-1", State.PARKED, detail="vendor ticket 4711 open", actor="cli:alice")
    record = journal.get("PR-1")
    assert record is not None and why_waiting(journal, record) == "vendor ticket 4711 open"


# -- readiness checks -------------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_check_runs_at_most_once_per_ttl() -> None:
    ticks, runs = Ticks(), []
    check = CachedCheck(lambda: runs.append(1) or True, ttl=30, clock=ticks, wait=5)
    assert check() and check()
    assert len(runs) == 1
    ticks.now += 31
    assert check()
    assert len(runs) == 2


def test_a_cached_check_fails_with_the_reason_and_recovers() -> None:
    ticks, answers = Ticks(), [RuntimeError("503 from Connect"), True]

    def probe() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    check = CachedCheck(probe, ttl=10, clock=ticks, wait=5)
    assert check() is False
    assert check.error == "RuntimeError: 503 from Connect"
    ticks.now += 11
    assert check() is True and check.error is None


def test_a_hanging_check_answers_from_its_last_success_until_that_is_too_old() -> None:
    import threading

    ticks, hanging, release, calls = Ticks(), threading.Event(), threading.Event(), []

    def probe() -> bool:
        calls.append(1)
        if len(calls) > 1:  # Connect hangs from the second call on
            hanging.set()
            release.wait(10)
        return True

    check = CachedCheck(probe, ttl=10, max_age=30, clock=ticks, wait=5)
    try:
        assert check() is True
        check.wait = 0  # from now on, never wait for the hanging call
        ticks.now += 20  # stale: a second run starts and hangs
        assert check() is True  # the last success is 20 s old, within max_age
        assert hanging.wait(5)
        ticks.now += 15
        assert check() is False  # 35 s since the last success
        assert len(calls) == 2  # one run at a time, however often asked
    finally:
        release.set()


def test_is_ready_needs_every_check_true_and_every_circuit_closed() -> None:
    assert is_ready({"journal": True, "connect": True, "circuits": {"v": "closed"}, "errors": {}})
    assert not is_ready({"journal": True, "connect": False})
    assert not is_ready({"journal": True, "circuits": {"v": "open"}})
    assert not is_ready({"journal": "yes"})


@pytest.mark.postgres
def test_listing_on_postgresql_gives_back_the_connection_it_stopped_reading_from(
    postgres_url: str,
) -> None:
    """A PostgreSQL iterator holds a pooled connection until closed: with a pool of one, a loop that
    stopped early and kept its iterator would leave the next query waiting for the pool's timeout."""
    import uuid

    import psycopg
    from psycopg import sql

    schema = f"ops_test_{uuid.uuid4().hex[:10]}"
    journal = open_journal(postgres_url, schema=schema, pool_size=1, min_size=1, connect_timeout=3)
    try:
        journal.migrate()
        for n in range(5):
            put(journal, f"PR-{n}", State.PARKED, reason="poison")
        records = journal.records()
        with streamed(records) as rows:
            assert next(rows).request_id == "PR-0"
        assert journal.counts()[State.PARKED] == 5  # `records` is still referenced here
        assert newest(journal, limit=10, max_scan=2).truncated
        parked = newest(journal, Filters(state=State.PARKED), limit=2).records
        assert [r.request_id for r in parked] == ["PR-4", "PR-3"]
    finally:
        journal.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")  # bounded, even behind a leaked transaction
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- the sign-in redirect stays on the site; /readyz explains every 503 --------------------------------


def _raw_get(base_url: str, target: str) -> tuple[int, dict[str, str]]:
    """A GET with the request target sent byte for byte (HTTP clients normalise ``/\\`` and ``//``)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(str(base_url))
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode(
                "latin-1"
            )
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
    }
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize(
    "path",
    [
        "/\\evil.example/",
        "//evil.example/",
        "/\\/evil.example/",
        "/%5Cevil.example/",
        "/%2F%2Fevil.example/",
        "/\\\\evil.example/x",
    ],
)
def test_the_token_sign_in_never_redirects_off_the_site(
    serve: Callable[..., httpx.Client], path: str
) -> None:
    from urllib.parse import urljoin, urlsplit

    client = serve(token=TOKEN, bound_to_loopback=False)
    status, headers = _raw_get(str(client.base_url), f"{path}?token={TOKEN}&state=parked")
    assert status == 303
    location = headers["location"]
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    # Where a browser goes: this server, whatever the path looked like.
    assert urlsplit(urljoin("http://127.0.0.1:9464/", location)).netloc == "127.0.0.1:9464", (
        location
    )
    assert location.endswith("?state=parked") and TOKEN not in location


def test_the_first_readyz_503_says_why(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    import threading

    answered = threading.Event()
    slow = CachedCheck(
        lambda: answered.wait(30), wait=0.05, name="connect"
    )  # Connect not answering yet
    breakers = {"vendor": type("Breaker", (), {"is_open": True})()}
    try:
        response = serve(
            readiness=make_readiness(journal=journal, connect=slow, breakers=breakers)
        ).get("/readyz")
        assert response.status_code == 503
        errors = response.json()["errors"]
        assert "no answer from the first check yet" in errors["connect"]
        assert "vendor" in errors["circuits"]
    finally:
        answered.set()
