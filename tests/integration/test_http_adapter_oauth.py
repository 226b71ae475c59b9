"""The ``http`` adapter's OAuth2 client credentials against the mock vendor's token endpoint: one
token shared by every thread, renewed before it expires, renewed once on a 401 and the call
repeated only when that is safe, token endpoint failures named (URL and status) and never sending
the vendor call, and neither the secret nor a token in any text the adapter makes."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from cancel_sandbox.vendor import VendorApp, VendorSettings, create_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.adapters import (
    AdapterError,
    Failed,
    RetryLater,
    SubscriptionStatus,
    Terminated,
)
from processor.adapters.http import HttpAdapter
from processor.adapters.http.oauth import TokenSource
from processor.ops.serving import ServerThread, free_port

from ..http_adapter_support import call

CLIENT_ID, SECRET = "cancel-processor", "oauth-client-secret-7d2c91"
SECRET_ENV = "TEST_OAUTH_CLIENT_SECRET"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Vendor:
    def __init__(self, app: VendorApp, server: ServerThread) -> None:
        self.app, self.url = app, server.url
        assert app.issuer is not None
        self.issuer = app.issuer

    def summary(self) -> dict[str, Any]:
        got = requests.get(f"{self.url}/admin/ledger?summary=1", timeout=10).json()
        return got["summary"]  # type: ignore[no-any-return]

    def statuses(self) -> list[int]:
        ledger = requests.get(f"{self.url}/admin/ledger", timeout=10).json()
        return [c["status_code"] for c in ledger["calls"]]

    def revoke_tokens(self) -> None:
        self.issuer.reset()


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[Vendor]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    app = create_app(
        VendorSettings(
            mode="read",
            oauth_client_id=CLIENT_ID,
            oauth_client_secret=SECRET,
            token_lifetime=300,
            refuse_pattern="",
        )
    )
    with ServerThread(app) as server:
        yield Vendor(app, server)


def options(url: str, idempotency: str = "key", **auth: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "idempotency": idempotency,
        "auth": {
            "type": "oauth2",
            "token_url": f"{url}/oauth/token",
            "client_id": CLIENT_ID,
            "env": SECRET_ENV,
            **auth,
        },
        "outcomes": MOCK_VENDOR_OUTCOMES,
        "status": True,
        "probe": {"subscription_id": "SUB-PROBE-1", "expect": ["active"]},
    }


def test_one_token_serves_every_thread_until_it_is_due(vendor: Vendor) -> None:
    adapter = HttpAdapter(options(vendor.url))
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda i: adapter.terminate(call(f"SUB-{i}")), range(20)))
    assert all(isinstance(o, Terminated) for o in outcomes), outcomes
    assert vendor.summary()["tokens_issued"] == 1 and adapter.tokens is not None
    assert adapter.tokens.fetched == 1
    assert set(vendor.statuses()) == {200}
    adapter.close()


@pytest.mark.parametrize(("renew_before", "due"), [(60, 240.0), (600, 150.0)])
def test_a_token_is_renewed_before_it_expires(
    vendor: Vendor, renew_before: float, due: float
) -> None:
    # 300 s tokens: renewed renew_before seconds early, but never earlier than half their life
    adapter = HttpAdapter(options(vendor.url, renew_before=renew_before))
    assert adapter.settings.oauth is not None
    clock = Clock()
    tokens = TokenSource(adapter.settings.oauth, {"timeout": (2, 5)}, clock=clock)
    first = tokens.token()
    clock.now += due - 0.1
    assert tokens.token() == first and tokens.fetched == 1
    clock.now += 0.2
    second = tokens.token()
    assert second != first and tokens.fetched == 2
    assert vendor.summary()["tokens_issued"] == 2


def test_a_401_renews_the_token_once_and_repeats_a_call_a_key_makes_harmless(
    vendor: Vendor,
) -> None:
    adapter = HttpAdapter(options(vendor.url, "key"))
    assert isinstance(adapter.terminate(call("SUB-1")), Terminated)
    vendor.revoke_tokens()  # the vendor forgets every token (a key rotation, a restart)
    outcome = adapter.terminate(call("SUB-2"))
    assert isinstance(outcome, Terminated), outcome
    assert vendor.statuses() == [200, 401, 200]
    assert vendor.summary()["tokens_issued"] == 2


def test_a_status_read_is_repeated_after_a_401(vendor: Vendor) -> None:
    adapter = HttpAdapter(options(vendor.url, "none"))
    assert adapter.probe().status == "ok"
    vendor.revoke_tokens()
    assert adapter.status(call("SUB-3")) is SubscriptionStatus.ACTIVE
    assert vendor.statuses() == [200, 401, 200]


def test_a_mutation_without_idempotency_is_not_repeated_after_a_401(vendor: Vendor) -> None:
    adapter = HttpAdapter(options(vendor.url, "none"))
    assert adapter.probe().status == "ok"
    vendor.revoke_tokens()
    outcome = adapter.terminate(call("SUB-4"))
    assert isinstance(outcome, Failed), outcome
    assert "HTTP 401" in outcome.detail and "not repeated (no idempotency)" in outcome.detail
    assert vendor.statuses() == [200, 401]  # the probe's read, then the one terminate
    assert vendor.summary()["effective_terminations"] == 0
    # the token was renewed all the same: the engine's next attempt is authorised
    assert isinstance(adapter.terminate(call("SUB-4")), Terminated)
    assert vendor.summary()["tokens_issued"] == 2


def test_a_token_refused_again_is_not_renewed_again(vendor: Vendor) -> None:
    class Ahead:  # the vendor's clock runs ahead: every token is expired when it arrives
        now = 0.0

        def __call__(self) -> float:
            self.now += 1000
            return self.now

    vendor.issuer.clock = Ahead()
    adapter = HttpAdapter(options(vendor.url, "key"))
    outcome = adapter.terminate(call("SUB-5"))
    assert isinstance(outcome, Failed) and "HTTP 401" in outcome.detail
    assert vendor.statuses() == [401, 401]
    assert vendor.summary()["tokens_issued"] == 2


def test_a_wrong_secret_is_a_definite_error_naming_the_token_url_and_status(
    vendor: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    adapter = HttpAdapter(options(vendor.url))
    url = f"{vendor.url}/oauth/token"
    checked = adapter.probe()
    assert checked.status == "config"
    assert checked.detail == f"token endpoint {url} answered HTTP 401 (invalid_client)"
    outcome = adapter.terminate(call("SUB-6"))
    assert isinstance(outcome, Failed)
    assert outcome.detail == f"terminate: {checked.detail}; nothing was sent"
    assert vendor.statuses() == []  # the vendor's API was never called
    assert "not-the-secret" not in checked.detail + outcome.detail


def test_a_token_endpoint_that_does_not_answer_means_retry_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(SECRET_ENV, SECRET)
    adapter = HttpAdapter(options(url))
    checked = adapter.probe()
    assert checked.status == "unreachable"
    assert checked.detail.startswith(f"token endpoint {url}/oauth/token: could not connect")
    outcome = adapter.terminate(call("SUB-7"))
    assert isinstance(outcome, RetryLater) and outcome.detail.endswith("nothing was sent")


def test_no_secret_or_token_in_any_text(vendor: Vendor) -> None:
    adapter = HttpAdapter(options(vendor.url, "none"))
    adapter.terminate(call("SUB-8"))
    vendor.revoke_tokens()
    texts = [repr(adapter), repr(adapter.settings), str(adapter.terminate(call("SUB-9")))]
    texts.append(str(adapter.status(call("SUB-9"))))  # fetches the second token
    issued = vendor.issuer.issued_tokens()
    assert len(issued) == 2
    for text in texts:
        assert SECRET not in text and not any(t in text for t in issued), text


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"client_id": None}, "option 'auth.client_id': required"),
        ({"token_url": "ftp://x"}, "option 'auth.token_url': expected a http or https URL"),
        ({"file": "/nonexistent"}, "give exactly one of env"),
        ({"env": "TEST_OAUTH_UNSET_VARIABLE"}, "TEST_OAUTH_UNSET_VARIABLE is not set or is empty"),
        ({"client_auth": "jwt"}, "option 'auth.client_auth': expected one of basic, post"),
        ({"scopes": "x"}, "option 'auth.scopes': unknown option"),
    ],
)
def test_bad_oauth_options_name_the_key(
    auth: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    raw = options("https://vendor.test")
    raw["auth"] = {k: v for k, v in {**raw["auth"], **auth}.items() if v is not None}
    with pytest.raises(AdapterError, match=message.replace("(", r"\(")) as raised:
        HttpAdapter(raw)
    assert SECRET not in str(raised.value)


def test_the_secret_can_come_from_a_file(vendor: Vendor, tmp_path: Any) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    raw = options(vendor.url)
    raw["auth"] = {**raw["auth"], "env": None, "file": str(path), "client_auth": "post"}
    raw["auth"] = {k: v for k, v in raw["auth"].items() if v is not None}
    assert isinstance(HttpAdapter(raw).terminate(call("SUB-10")), Terminated)


def test_a_renewal_that_fails_after_a_401_leaves_the_401_standing(vendor: Vendor) -> None:
    adapter = HttpAdapter(options(vendor.url, "key"))
    assert isinstance(adapter.terminate(call("SUB-11")), Terminated)
    vendor.issuer.client_secret = "rotated-at-the-vendor"  # our secret no longer works
    vendor.revoke_tokens()
    outcome = adapter.terminate(call("SUB-12"))  # no exception escapes the adapter
    assert isinstance(outcome, Failed), outcome
    assert "HTTP 401" in outcome.detail
    assert (
        f"renewing the token failed (token endpoint {vendor.url}/oauth/token answered HTTP 401"
        in (outcome.detail)
    )
    assert vendor.statuses() == [200, 401]
