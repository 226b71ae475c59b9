"""The ``http`` adapter's transport failures against real sockets on loopback, and each mode of the
local mock vendor over real HTTP."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.vendor import VendorApp, VendorSettings, create_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.adapters import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorCall,
    has_status_read,
)
from processor.adapters.http import HttpAdapter
from processor.ops.serving import ServerThread, free_port

from ..http_adapter_support import (
    REQUEST,
    TERMINATE,
    adapter,
    call,
    vendor_fixture,  # noqa: F401 - the vendor fixture
)

# -- transport, against real sockets -----------------------------------------------------------


class RawServer:
    """A loopback TCP server whose every connection is handled by ``behave(conn)``; counts them."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.behave, self.stop, self.connections = behave, threading.Event(), 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                read_request(conn)
                self.behave(conn, self.stop)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        data += conn.recv(4096) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(4096) or b"x" * length
    return data


def close_without_answer(conn: socket.socket, stop: threading.Event) -> None:
    pass  # leaving the with-block closes the connection


def never_answer(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(5)


def drop_mid_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
        b'{"status": "termi'
    )


def answer_503_retry_now(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")


def answer_terminated(conn: socket.socket, stop: threading.Event) -> None:
    body = b'{"status": "terminated"}'
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_connection_refused_is_retry_later_because_nothing_was_sent() -> None:
    outcome = HttpAdapter({"base_url": f"http://127.0.0.1:{free_port()}"}).terminate(call())
    assert isinstance(outcome, RetryLater) and "nothing was sent" in outcome.detail


def test_a_name_that_does_not_resolve_is_retry_later() -> None:
    outcome = HttpAdapter({"base_url": "http://vendor.invalid"}).terminate(call())
    assert isinstance(outcome, RetryLater) and "nothing was sent" in outcome.detail


@pytest.mark.parametrize("behave", [close_without_answer, drop_mid_body, never_answer])
def test_a_request_that_left_without_a_whole_answer_is_ambiguous_and_not_retried(
    behave: Callable[[socket.socket, threading.Event], None],
) -> None:
    with RawServer(behave) as server:
        http = HttpAdapter({"base_url": server.url, "timeout": {"connect": 2, "read": 0.3}})
        outcome = http.terminate(call())
        http.close()
    assert isinstance(outcome, Ambiguous) and "the request was sent" in outcome.detail
    assert server.connections == 1  # urllib3's own retries are off


def test_idempotent_methods_are_not_retried_by_urllib3_either() -> None:
    # urllib3 would retry a GET or DELETE on a dropped connection, or on 503 with Retry-After.
    options = {"terminate": {"method": "DELETE"}, "status": True, "timeout": 2}
    with RawServer(close_without_answer) as server:
        http = HttpAdapter({"base_url": server.url, **options})
        assert isinstance(http.terminate(call()), Ambiguous)
        assert isinstance(http.status(call()), RetryLater)
        http.close()
    assert server.connections == 2
    with RawServer(answer_503_retry_now) as server:
        http = HttpAdapter({"base_url": server.url, **options})
        assert http.status(call()) == RetryLater("status: HTTP 503", after=0.0)
        http.close()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), RetryLater),
        (
            requests.exceptions.SSLError(ssl.SSLCertVerificationError("certificate verify failed")),
            RetryLater,
        ),
        (requests.exceptions.SSLError("bad record mac"), Ambiguous),
        (requests.exceptions.ReadTimeout("read timed out"), Ambiguous),
        (requests.exceptions.ChunkedEncodingError("IncompleteRead"), Ambiguous),
        (requests.exceptions.InvalidHeader("bad header"), Failed),
    ],
)
def test_transport_errors_are_classified_by_whether_the_request_left(
    vendor: responses.RequestsMock,
    error: Exception,
    expected: type,
) -> None:
    vendor.post(TERMINATE, body=error)
    assert type(adapter().terminate(call())) is expected


def test_threads_share_one_adapter_and_close_releases_it() -> None:
    with RawServer(answer_terminated) as server:
        http = HttpAdapter({"base_url": server.url})
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(http.terminate(call())))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        http.close()
        results.append(
            http.terminate(call())
        )  # a closed adapter opens a fresh session if used again
        http.close()
    assert results == [Terminated("terminate: HTTP 200")] * 5


# -- the local mock vendor, one test per mode ----------------------------------------------------

MOCK_TOKEN = "mock-vendor-token-4711"
REFUSAL = "Subscription has an outstanding balance; contact billing."


@pytest.fixture
def mock_vendor(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[VendorApp, str]]:
    monkeypatch.setenv("MOCK_VENDOR_TOKEN", MOCK_TOKEN)
    app = create_app(VendorSettings(token=MOCK_TOKEN, mode=request.param))
    with ServerThread(app) as server:
        yield app, server.url
    app.close()


def mock_adapter(url: str, **options: Any) -> HttpAdapter:
    return HttpAdapter(
        {
            "base_url": url,
            "auth": {"type": "bearer", "env": "MOCK_VENDOR_TOKEN"},
            "outcomes": MOCK_VENDOR_OUTCOMES,
            **options,
        }
    )


def is_failed(outcome: Any, head: str) -> bool:
    """A definite error whose detail starts with ``head`` (then names the URL template and body)."""
    return isinstance(outcome, Failed) and outcome.detail.startswith(head + " from ")


def effects(app: VendorApp) -> tuple[int, int]:
    summary = app.state.ledger.summary()
    return summary["effective_terminations"], summary["duplicate_terminations"]


@pytest.mark.parametrize("mock_vendor", ["key"], indirect=True)
def test_mock_vendor_in_key_mode_replays_repeats_and_settles_a_dropped_answer(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="key", suspend=True)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200 (replayed)")
    assert http.terminate(call("SUB-107")) == Refused(REFUSAL)
    assert http.terminate(call("SUB-GONE-1")) == AlreadyGone("terminate: HTTP 404 not_found")
    # The terminate key on another step is another request: refused as reuse, not as a refusal.
    reuse = VendorCall(
        request=REQUEST, subscription_id="SUB-100", idempotency_key=call("SUB-100").idempotency_key
    )
    assert is_failed(http.suspend(reuse), "suspend: HTTP 422 idempotency_key_reuse")
    # The vendor acts, then the connection drops: ambiguous; the same key again settles it.
    app.faults.update(FaultSettings(drop_rate=1.0))
    assert isinstance(http.terminate(call("SUB-200")), Ambiguous)
    app.faults.update(FaultSettings())
    assert http.terminate(call("SUB-200")) == Terminated("terminate: HTTP 200 (replayed)")
    assert effects(app) == (2, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["natural"], indirect=True)
def test_mock_vendor_in_natural_mode_answers_repeats_with_already_gone(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="natural", suspend=True, purge=True)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == AlreadyGone("terminate: HTTP 409 already_terminated")
    assert http.suspend(call("SUB-100", "suspend")) == AlreadyGone(
        "suspend: HTTP 409 already_terminated"
    )
    assert is_failed(http.purge(call("SUB-101", "purge")), "purge: HTTP 409 not_terminated")
    assert http.purge(call("SUB-100", "purge")) == Terminated("purge: HTTP 200")
    assert http.purge(call("SUB-100", "purge")) == AlreadyGone("purge: HTTP 409 already_purged")
    assert effects(app) == (1, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["read"], indirect=True)
def test_mock_vendor_in_read_mode_tells_the_truth_through_a_status_read(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="none", status=True)
    assert http.status(call("SUB-100")) == SubscriptionStatus.ACTIVE
    app.faults.update(FaultSettings(drop_rate=1.0, methods="POST"))
    assert isinstance(http.terminate(call("SUB-100")), Ambiguous)
    app.faults.update(FaultSettings(throttle_rate=1.0, retry_after=2, methods="POST"))
    assert http.terminate(call("SUB-101")) == RetryLater("terminate: HTTP 429", after=2.0)
    app.faults.update(FaultSettings())
    assert (
        http.status(call("SUB-100")) == SubscriptionStatus.TERMINATED
    )  # the dropped call had acted
    assert http.status(call("SUB-101")) == SubscriptionStatus.ACTIVE  # the throttled one had not
    assert http.status(call("SUB-GONE-1")) == SubscriptionStatus.NOT_FOUND
    assert effects(app) == (1, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["none"], indirect=True)
def test_mock_vendor_in_none_mode_acts_twice_on_a_repeat(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="none")
    assert not has_status_read(http)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert effects(app) == (2, 1)  # why the engine parks an ambiguous call to such a vendor
    misconfigured = mock_adapter(url, idempotency="none", status=True)
    assert is_failed(misconfigured.status(call("SUB-100")), "status: HTTP 405 not_supported")
    wrong_token = HttpAdapter({"base_url": url, "outcomes": MOCK_VENDOR_OUTCOMES})
    assert is_failed(wrong_token.terminate(call("SUB-300")), "terminate: HTTP 401 unauthorized")
    for adapter_ in (http, misconfigured, wrong_token):
        adapter_.close()
