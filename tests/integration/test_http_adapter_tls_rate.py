"""The ``http`` adapter's client certificate (``tls``) against the mock vendor's mTLS listener, and
its rate limit (``rate``) against the mock vendor's own limit: calls from many threads stay under
it with no 429, waiting is counted in the metrics, and without the option the same load is
throttled (so the test can fail)."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from cancel_sandbox.vendor import VendorSettings, create_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from cancel_sandbox.vendor.pki import Pki, make_pki
from processor.adapters import AdapterError, Ambiguous, Failed, Terminated
from processor.adapters.http import HttpAdapter
from processor.adapters.http.outcomes import client_cert_refused
from processor.observe import Metrics
from processor.ops.serving import ServerThread

from ..http_adapter_support import call

TOKEN_ENV, TOKEN = "TEST_TLS_RATE_VENDOR_TOKEN", "vendor-local-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mtls"))


def options(url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "idempotency": "key",
        "auth": {"type": "bearer", "env": TOKEN_ENV},
        "outcomes": MOCK_VENDOR_OUTCOMES,
        "status": True,
        **more,
    }


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture(scope="module")
def mtls_vendor(pki: Pki) -> Iterator[str]:
    app = create_app(VendorSettings(refuse_pattern=""))
    with ServerThread(app, **pki.server_tls()) as server:
        yield f"https://127.0.0.1:{server.port}"


def test_a_client_certificate_gets_through_an_mtls_listener(pki: Pki, mtls_vendor: str) -> None:
    tls = {"cert": str(pki.client_cert), "key": str(pki.client_key)}
    adapter = HttpAdapter(options(mtls_vendor, verify=str(pki.ca), tls=tls))
    assert isinstance(adapter.terminate(call("SUB-1")), Terminated)
    assert adapter.probe().status == "ok"


def test_without_the_right_certificate_nothing_gets_through(pki: Pki, mtls_vendor: str) -> None:
    stranger = {"cert": str(pki.stranger_cert), "key": str(pki.stranger_key)}
    for extra in ({}, {"tls": stranger}):
        adapter = HttpAdapter(options(mtls_vendor, verify=str(pki.ca), **extra))
        # TLS 1.3 reports the refusal as a closed connection: "may have acted" to the engine,
        # which then repeats only as the vendor's mode allows
        assert isinstance(adapter.terminate(call("SUB-2")), (Ambiguous, Failed))
        assert adapter.probe().status != "ok"
    check = requests.get(
        f"{mtls_vendor}/admin/ledger?summary=1",
        verify=str(pki.ca),
        cert=(str(pki.client_cert), str(pki.client_key)),
        timeout=10,
    ).json()["summary"]
    assert check["effective_terminations"] <= 1  # SUB-1 from the test above, if it ran first


def test_an_alert_about_our_certificate_is_a_definite_error() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    wrapped = requests.exceptions.SSLError(alert)
    assert client_cert_refused(wrapped) == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert client_cert_refused(requests.exceptions.ConnectionError("reset")) is None
    # a certificate we rejected is the server's, not ours
    assert client_cert_refused(ssl.SSLCertVerificationError(1, "unknown ca")) is None


def test_tls_files_are_checked_at_start(pki: Pki, tmp_path: Path) -> None:
    def build(**tls: str) -> None:
        HttpAdapter(options("https://vendor.test", tls=tls))

    missing = str(tmp_path / "nope.pem")
    with pytest.raises(AdapterError, match=f"option 'tls.cert': the file {missing} cannot be read"):
        build(cert=missing, key=str(pki.client_key))
    with pytest.raises(AdapterError, match=f"option 'tls.key': the file {missing} cannot be read"):
        build(cert=str(pki.client_cert), key=missing)
    with pytest.raises(AdapterError, match="not a PEM certificate and its unencrypted private key"):
        build(cert=str(pki.client_cert), key=str(pki.stranger_key))  # another certificate's key
    with pytest.raises(AdapterError, match="option 'tls.key': required"):
        build(cert=str(pki.client_cert))
    encrypted = tmp_path / "encrypted.key"
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(AdapterError, match="unencrypted"):
        build(cert=str(pki.client_cert), key=str(encrypted))


# -- rate ---------------------------------------------------------------------------------------

N = 10  # calls per second, the vendor's limit and the adapter's


@pytest.fixture
def limited_vendor() -> Iterator[str]:
    app = create_app(VendorSettings(rate_calls=N, rate_per=1, refuse_pattern=""))
    with ServerThread(app) as server:
        yield server.url


def run_load(adapter: HttpAdapter, calls: int) -> list[Any]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: adapter.terminate(call(f"SUB-{i}")), range(calls)))


def ledger(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/admin/ledger", timeout=10).json()  # type: ignore[no-any-return]


def test_the_rate_limit_keeps_every_second_under_the_vendors_limit(limited_vendor: str) -> None:
    metrics = Metrics(CollectorRegistry())
    adapter = HttpAdapter(options(limited_vendor, rate={"calls": N, "per": 1}))
    adapter.name = "vendor"
    outcomes = run_load(adapter, 3 * N)
    assert all(isinstance(o, Terminated) for o in outcomes), outcomes
    got = ledger(limited_vendor)
    per_second = Counter(c["at"][:19] for c in got["calls"])  # ISO time to the second
    assert max(per_second.values()) <= N, per_second
    assert (
        got["summary"]["rate_limited_calls"] == 0 and "429" not in got["summary"]["calls_by_status"]
    )
    waits = metrics.registry.get_sample_value(
        "cancel_vendor_rate_waits_total", {"adapter": "vendor"}
    )
    waited = metrics.registry.get_sample_value(
        "cancel_vendor_rate_wait_seconds_total", {"adapter": "vendor"}
    )
    assert waits is not None and waits >= N and waited is not None and waited > 0


def test_without_the_option_the_same_load_is_throttled(limited_vendor: str) -> None:
    adapter = HttpAdapter(options(limited_vendor))
    run_load(adapter, 3 * N)
    assert ledger(limited_vendor)["summary"]["rate_limited_calls"] > 0


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ({"calls": 0}, "option 'rate.calls': expected a whole number of calls, at least 1"),
        ({"calls": 2.5}, "option 'rate.calls': expected a whole number"),
        ({"calls": 5, "per": 0}, "option 'rate.per': expected a positive number of seconds"),
        ({"per": 1}, "option 'rate.calls': required"),
        ({"calls": 5, "burst": 1}, "option 'rate.burst': unknown option"),
        ({"calls": 5, "slack": -1}, "option 'rate.slack': expected seconds from 0 to 60"),
    ],
)
def test_bad_rate_options_name_the_key(rate: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        HttpAdapter(options("https://vendor.test", rate=rate))
