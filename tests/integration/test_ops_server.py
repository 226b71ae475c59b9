"""The ops server over real HTTP (uvicorn on a loopback port) against a real SQLite journal file:
probes, metrics, the token, size limits, secret masking, its configuration, and sign-in redirects.
(The status page: test_ops_status_page.py.)"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
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
from processor.ops.readiness import CachedCheck, make_readiness
from processor.ops.server import OpsServer, build_ops_server, create_ops_app

from ..ops_support import (  # noqa: F401 - fixtures
    TOKEN,
    clock_fixture,
    journal_fixture,
    listed,
    mixed_fixture,
    put,
    ready,
    section,
    serve_fixture,
)

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


# -- configuration ---------------------------------------------------------------------------------


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


# -- the sign-in redirect stays on the site; /readyz explains every 503 ----------------------------


def _raw_get(base_url: str, target: str) -> tuple[int, dict[str, str]]:
    """A GET with the request target sent byte for byte (HTTP clients normalise ``/\\`` and
    ``//``)."""
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


# -- the vendor's probe in /readyz ----------------------------------------------------------------


def _token_checking_vendor(accepted: dict[str, str], calls: list[str]) -> Any:
    """A vendor answering a status read with 200 ``active`` to the accepted bearer token, 401
    otherwise (what a rotated or revoked token gets)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        if request.headers.get("authorization") != f"Bearer {accepted['token']}":
            return JSONResponse({"error": "unauthorized"}, 401)
        return JSONResponse({"id": request.path_params["sid"], "status": "active"})

    return Starlette(routes=[Route("/v1/subscriptions/{sid}", status, methods=["GET"])])


def test_readyz_is_503_while_the_vendor_rejects_the_token_and_200_once_it_takes_it(
    serve: Callable[..., httpx.Client], journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real HTTP vendor on a loopback port and the real http adapter: the probe's 401 makes
    /readyz 503 with the reason (never the token); the vendor accepting the token again makes it
    200 at the next refresh; /readyz hits between refreshes never reach the vendor."""
    import time

    from processor.adapters import load_adapter
    from processor.ops.readiness import vendor_checks
    from processor.ops.serving import ServerThread

    secret = "rotated-vendor-token-do-not-print"
    monkeypatch.setenv("READYZ_VENDOR_TOKEN", secret)
    register_secret(secret)
    accepted, calls = {"token": "the-old-token"}, []
    with ServerThread(_token_checking_vendor(accepted, calls)) as vendor:
        adapter = load_adapter(
            "http",
            {
                "base_url": vendor.url,
                "auth": {"type": "bearer", "env": "READYZ_VENDOR_TOKEN"},
                "status": True,
                "probe": {"subscription_id": "SUB-PROBE-1", "expect": ["active"]},
                "timeout": {"connect": 2, "read": 5},
            },
            name="vendor",
        )
        try:
            checks = vendor_checks({"vendor": adapter}, ttl=0.5, wait=5)
            client = serve(readiness=make_readiness(journal=journal, vendors=checks))
            rejected = client.get("/readyz")
            assert rejected.status_code == 503, rejected.text
            body = rejected.json()
            assert body["vendors"] == {"vendor": False}
            why = body["errors"]["vendor vendor"]
            assert why.startswith("probe config:") and "401" in why, why
            assert secret not in rejected.text and "the-old-token" not in rejected.text
            for _ in range(20):  # cached: twenty hits within the refresh interval, one call
                assert client.get("/readyz").status_code == 503
            assert len(calls) == 1, calls

            accepted["token"] = secret  # the vendor takes the token now
            deadline = time.monotonic() + 10
            while (answer := client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.1)
            assert answer.json() == {"journal": True, "vendors": {"vendor": True}}
            assert len(calls) <= 2 + 10 / 0.5  # at most one probe per refresh interval
        finally:
            adapter.close()  # type: ignore[attr-defined]
