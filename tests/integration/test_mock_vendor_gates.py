"""The mock vendor as a stricter vendor, over real HTTP: OAuth2 client credentials with short-lived
tokens, a rate limit answering 429 with Retry-After, and an HTTPS listener that requires a client
certificate; each counted in the ledger. The defaults (static token, no limit) stay as they were.

Time is the gates' own clock, replaced through their public ``clock`` field, so nothing waits.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cancel_sandbox.vendor import VendorApp, VendorSettings, create_app
from cancel_sandbox.vendor.pki import Pki, make_pki
from processor.ops.serving import ServerThread

CLIENT_ID, CLIENT_SECRET = "cancel-processor", "client-secret-5b1e77"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def oauth_vendor() -> Iterator[tuple[VendorApp, str, Clock]]:
    app = create_app(
        VendorSettings(
            oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET, token_lifetime=5
        )
    )
    assert app.issuer is not None
    clock = app.issuer.clock = Clock()
    with ServerThread(app) as server:
        yield app, server.url, clock


def token(url: str, **form: str) -> requests.Response:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    headers = {} if "client_secret" in form else {"Authorization": f"Basic {basic}"}
    data = {"grant_type": "client_credentials", **form}
    return requests.post(f"{url}/oauth/token", data=data, headers=headers, timeout=10)


def terminate(url: str, bearer: str, sid: str = "SUB-1") -> requests.Response:
    return requests.post(
        f"{url}/v1/subscriptions/{sid}/terminate",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )


def summary(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{url}/admin/ledger?summary=1", timeout=10).json()
    return answer["summary"]  # type: ignore[no-any-return]


def test_tokens_are_issued_to_the_client_and_expire(oauth_vendor: tuple[Any, str, Clock]) -> None:
    app, url, clock = oauth_vendor
    issued = token(url)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 5
    assert issued.headers["Cache-Control"] == "no-store"
    # client_secret_post works too, and gives another token
    other = token(url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET).json()["access_token"]
    assert other != body["access_token"]
    assert terminate(url, body["access_token"]).status_code == 200
    clock.now += 5.01
    expired = terminate(url, body["access_token"], "SUB-2")
    assert expired.status_code == 401 and expired.json() == {"error": "invalid_token"}
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    # the static token of the default vendor is not a token here
    assert terminate(url, "vendor-local-token", "SUB-3").status_code == 401
    counts = summary(url)
    assert counts["tokens_issued"] == 2
    assert counts["expired_token_calls"] == 1 and counts["unknown_token_calls"] == 1
    assert counts["calls_by_status"] == {"200": 1, "401": 2}
    assert counts["effective_terminations"] == 1
    assert CLIENT_SECRET not in repr(app.issuer) and body["access_token"] not in repr(app.issuer)


def test_a_wrong_client_or_grant_gets_no_token(oauth_vendor: tuple[Any, str, Clock]) -> None:
    _, url, _ = oauth_vendor
    wrong = token(url, client_id=CLIENT_ID, client_secret="not-it")
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})
    grant = token(url, grant_type="password")
    assert (grant.status_code, grant.json()) == (400, {"error": "unsupported_grant_type"})
    assert CLIENT_SECRET not in wrong.text + grant.text
    assert summary(url)["token_refusals"] == 2 and summary(url)["tokens_issued"] == 0


def test_the_default_vendor_has_no_token_endpoint_and_no_limit() -> None:
    app = create_app(VendorSettings())
    with ServerThread(app) as server:
        assert requests.post(f"{server.url}/oauth/token", timeout=10).status_code == 404
        answers = [terminate(server.url, "vendor-local-token", f"SUB-{i}") for i in range(30)]
        assert 429 not in {a.status_code for a in answers}
        assert summary(server.url)["rate_limited_calls"] == 0


def test_a_rate_limit_answers_429_with_retry_after_past_n_calls_per_window() -> None:
    app = create_app(VendorSettings(rate_calls=3, rate_per=2))
    assert app.rate is not None
    clock = app.rate.clock = Clock(1_000_000.5)  # half a second into a 2-second window
    with ServerThread(app) as server:
        codes = [terminate(server.url, "vendor-local-token", f"SUB-{i}") for i in range(5)]
        assert [c.status_code for c in codes] == [200, 200, 200, 429, 429]
        assert codes[3].headers["Retry-After"] == "2"  # 1.5 s to the window's end, rounded up
        clock.now = 1_000_002.0  # the next window
        assert terminate(server.url, "vendor-local-token", "SUB-9").status_code == 200
        counts = summary(server.url)
    assert counts["rate_limited_calls"] == 2
    assert counts["calls_by_status"] == {"200": 4, "429": 2}
    assert counts["effective_terminations"] == 4


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mtls"))


def test_the_mtls_listener_takes_only_clients_with_a_certificate_its_ca_signed(pki: Pki) -> None:
    app = create_app(VendorSettings())
    with ServerThread(app, **pki.server_tls()) as server:
        url = f"https://127.0.0.1:{server.port}"
        ok = requests.get(
            f"{url}/healthz",
            verify=str(pki.ca),
            cert=(str(pki.client_cert), str(pki.client_key)),
            timeout=10,
        )
        assert ok.status_code == 200
        for cert in (None, (str(pki.stranger_cert), str(pki.stranger_key))):
            # TLS 1.3: the server's refusal reaches the client as a closed connection
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(f"{url}/healthz", verify=str(pki.ca), cert=cert, timeout=10)


def test_settings_refuse_half_configured_gates() -> None:
    with pytest.raises(ValueError, match="client secret"):
        VendorSettings(oauth_client_id="x")
    with pytest.raises(ValueError, match="rate_calls"):
        VendorSettings(rate_calls=0)
    assert "s3cr3t-value" not in repr(
        VendorSettings(oauth_client_id="x", oauth_client_secret="s3cr3t-value")
    )


def test_the_cli_builds_tls_options(tmp_path: Path) -> None:
    import argparse

    from cancel_sandbox.vendor.cli import configure_parser, tls_options

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert tls_options(parser.parse_args([])) == {}
    args = parser.parse_args(["--tls-cert", "c.pem", "--tls-key", "k.pem", "--client-ca", "ca"])
    assert tls_options(args)["ssl_ca_certs"] == "ca"
    with pytest.raises(ValueError, match="need --tls-cert"):
        tls_options(parser.parse_args(["--client-ca", "ca"]))
