"""What the gateway skips to save CPU per request, and what it still guarantees.

- A note's first attempt is posted without reading the conversation's messages first; any other
  once-keyed note still reads them, and an ambiguous failure is still reconciled by a read.
- The environment (proxies, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``) is read once, when the gateway
  is built, and still honoured: a proxy named by ``HTTP_PROXY`` carries the calls (a real local
  proxy here), ``NO_PROXY`` bypasses it.
- The workers share one pool of kept-alive connections, sized to the worker count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses

from processor.marketplace import ConnectGateway, GatewaySettings, TransientError

ENDPOINT = "https://connect.example/public/v1"
API_KEY = "ApiKey SU-123-456-789:Zx9-very-secret-part-0123456789"


def url(path: str) -> str:
    return f"{ENDPOINT}/{path}"


def gateway(endpoint: str = ENDPOINT, **overrides: Any) -> ConnectGateway:
    return ConnectGateway(
        GatewaySettings(endpoint=endpoint, api_key=API_KEY, **overrides), sleep=lambda _: None
    )


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def calls(http: responses.RequestsMock) -> list[str]:
    return [
        f"{c.request.method} {urlsplit(c.request.url).path.rsplit('/v1/', 1)[1]}"
        for c in http.calls
    ]


# -- notes --------------------------------------------------------------------------------------


def test_a_first_attempt_posts_without_reading_the_messages(http: responses.RequestsMock) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=201, json={"id": "ME-1"})
    market = gateway()
    assert market.post_note("PR-1", "Done.", once_key="PR-1:approved", first_attempt=True)
    assert calls(http) == ["GET conversations", "POST conversations/CO-1/messages"]
    # The once-key still holds within the process.
    assert not market.post_note("PR-1", "Done.", once_key="PR-1:approved", first_attempt=True)
    assert len(http.calls) == 2


def test_a_note_that_may_have_been_sent_before_is_looked_for_first(
    http: responses.RequestsMock,
) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("GET", url("conversations/CO-1/messages"), json=[{"id": "ME-1", "text": "Done."}])
    assert not gateway().post_note("PR-1", "Done.", once_key="PR-1:approved")
    assert calls(http) == ["GET conversations", "GET conversations/CO-1/messages"]


def test_a_first_attempt_whose_answer_is_lost_is_reconciled_before_a_second_post(
    http: responses.RequestsMock,
) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=504)
    http.add("GET", url("conversations/CO-1/messages"), json=[{"id": "ME-1", "text": "Done."}])
    assert gateway().post_note("PR-1", "Done.", once_key="PR-1:approved", first_attempt=True)
    assert calls(http) == [
        "GET conversations",
        "POST conversations/CO-1/messages",
        "GET conversations/CO-1/messages",
    ]


# -- the environment, read once -----------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with a pending request's JSON; records the request line and the
    client's port (one port per TCP connection)."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[str]
    ports: set[int]

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        time.sleep(0.01)  # long enough for every worker to have a call in flight at once
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.server.ports.add(self.client_address[1])  # type: ignore[attr-defined]
        body = json.dumps({"id": "PR-1", "status": "pending"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.seen, httpd.ports = [], set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _address(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_proxy_named_by_the_environment_carries_the_calls(
    server: ThreadingHTTPServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", _address(server))
    # connect.invalid never resolves: only the proxy can answer for it.
    market = gateway("http://connect.invalid/public/v1")
    assert market.get_request("PR-1")["id"] == "PR-1"
    assert server.seen == ["http://connect.invalid/public/v1/requests/PR-1"]  # type: ignore[attr-defined]


def test_the_environment_is_read_when_the_gateway_is_built(
    server: ThreadingHTTPServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", _address(server))
    market = gateway("http://connect.invalid/public/v1")
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # too late: already read
    assert market.get_request("PR-1")["id"] == "PR-1"
    clean_env.delenv("HTTP_PROXY")
    with pytest.raises(TransientError):  # no proxy when it was built: connect.invalid is unknown
        gateway("http://connect.invalid/public/v1", max_attempts=1).get_request("PR-1")


def test_no_proxy_from_the_environment_bypasses_the_proxy(
    server: ThreadingHTTPServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    market = gateway(f"{_address(server)}/public/v1")
    assert market.get_request("PR-1")["id"] == "PR-1"
    assert server.seen == ["/public/v1/requests/PR-1"]  # type: ignore[attr-defined]


def test_a_ca_bundle_named_by_the_environment_is_what_calls_verify_against(
    clean_env: pytest.MonkeyPatch, tmp_path: Any, http: responses.RequestsMock
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read by this test")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    http.add("GET", url("requests/PR-1"), json={"id": "PR-1", "status": "pending"})
    gateway().get_request("PR-1")
    assert http.calls[0].request.req_kwargs["verify"] == str(bundle)
    # A bundle in the configuration wins over the environment's, as in requests.
    own = tmp_path / "own.pem"
    own.write_text("not read either")
    gateway(verify=str(own)).get_request("PR-1")
    assert http.calls[1].request.req_kwargs["verify"] == str(own)


# -- connections --------------------------------------------------------------------------------


def test_workers_keep_their_connections_alive_beyond_ten(
    server: ThreadingHTTPServer, clean_env: pytest.MonkeyPatch
) -> None:
    # requests' default pool keeps 10 idle connections: when 16 workers' calls end together, six
    # would be thrown away, and opened again for the next round.
    market = gateway(f"{_address(server)}/public/v1", connections=20)
    with ThreadPoolExecutor(16) as pool:
        for _ in range(10):
            for future in [pool.submit(market.get_request, "PR-1") for _ in range(16)]:
                future.result()
    assert len(server.seen) == 160  # type: ignore[attr-defined]
    assert len(server.ports) <= 16  # type: ignore[attr-defined]
