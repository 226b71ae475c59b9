"""Size and time limits on the local servers that take requests from elsewhere: the mock
marketplace and the mock vendor, and the ops server's request heads (its body and token rules are
in test_ops_server.py). Each runs in uvicorn on a loopback port, as the sandbox and the CLI run
them: an oversized body is answered 413, whether it announces its length or streams without one,
and an oversized request head is refused before any route runs. On the ops server the request
line counts toward its 16 KiB head limit (414/431, and the connection closed), and a head that
does not arrive in time closes its connection, so slow-header clients cannot starve ``/healthz``.
Ordinary requests right after still work: a refusal does not take the server down.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.observe import Metrics
from processor.ops.readiness import make_readiness
from processor.ops.server import OpsServer, create_ops_app
from processor.ops.serving import MAX_HEADER_BYTES


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(generate=3, seed=2) as box:
        yield box


def _targets(box: Sandbox) -> dict[str, tuple[str, str, dict[str, str]]]:
    """server -> (base URL, a POST path that reads a JSON body, auth headers)."""
    request_id = sorted(box.pending_cancels())[0]
    return {
        "marketplace": (
            box.marketplace.url,
            f"/public/v1/requests/{request_id}/fail",
            {"Authorization": box.api_key},
        ),
        "vendor": (
            box.vendor.url,
            "/v1/subscriptions/SUB-LIMITS-1/terminate",
            {"Authorization": f"Bearer {box.vendor_token}", "Idempotency-Key": "limits-1"},
        ),
    }


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 4096
        sent += 4096


@pytest.mark.parametrize("server", ["marketplace", "vendor"])
def test_an_oversized_body_is_answered_413(sandbox: Sandbox, server: str) -> None:
    base, path, auth = _targets(sandbox)[server]
    limit = (1 << 20) if server == "marketplace" else 64 * 1024
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        declared = client.post(
            path, content=b" " * (limit + 1), headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413, declared.text
        streamed = client.post(
            path, content=_chunks(limit + 8192), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text
    # Nothing was acted on: the cancel is still pending, the vendor saw no termination.
    if server == "marketplace":
        request_id = path.split("/")[-2]
        assert sandbox.request(request_id)["status"] == "pending"
    else:
        assert not sandbox.vendor_effects("SUB-LIMITS-1")


def _raw_get(base: str, header_bytes: int) -> bytes:
    """A GET whose head carries ``header_bytes`` of padding, sent on a raw socket (no client
    library second-guesses it); the first bytes of the answer, or b"" when the server hung up."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        f"GET /admin/ledger HTTP/1.1\r\nHost: {host}\r\nX-Padding: {'y' * header_bytes}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(head)
            return sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return b""


@pytest.mark.parametrize("server", ["marketplace", "vendor"])
def test_an_oversized_request_head_is_refused(sandbox: Sandbox, server: str) -> None:
    base = _targets(sandbox)[server][0]
    for size in (MAX_HEADER_BYTES + 1024, 2 * MAX_HEADER_BYTES + 1024):  # over ours; over h11's too
        answer = _raw_get(base, size)
        assert answer.startswith(b"HTTP/1.1 431"), answer
    # A head under the limit is served, and the server still serves after the refusal.
    assert _raw_get(base, 1024).startswith(b"HTTP/1.1 200")


# -- the ops server's request heads --------------------------------------------------------------

HEAD_TIMEOUT = 1.0  # the server's own default is 5 s; a shorter one keeps this test short


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[OpsServer]:
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.migrate()
    app = create_ops_app(
        journal=journal,
        metrics=Metrics(),
        readiness=make_readiness(journal=journal),
        token=None,
        bound_to_loopback=True,
    )
    server = OpsServer(app, port=0, head_timeout=HEAD_TIMEOUT).start()
    try:
        yield server
    finally:
        server.stop()
        journal.close()


def _answer_and_close(port: int, head: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``head`` on a raw socket; (the answer read, whether the server closed the connection)
    within ``timeout`` seconds (bounded reads)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
        except (ConnectionResetError, BrokenPipeError):
            return b"", True
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer, True
            except TimeoutError:
                return answer, False
            if not chunk:
                return answer, True
            answer += chunk
        return answer, False


def _healthz(port: int) -> int:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return client.get("/healthz").status_code


@pytest.mark.parametrize("path_bytes", [70_000, 17 * 1024])
def test_a_long_request_line_is_refused_and_the_connection_closed(
    ops: OpsServer, path_bytes: int
) -> None:
    head = f"GET /{'a' * path_bytes} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    answer, closed = _answer_and_close(ops.port, head)
    assert answer.startswith((b"HTTP/1.1 414", b"HTTP/1.1 431")), answer[:80]
    assert closed
    assert _healthz(ops.port) == 200


def test_the_request_line_counts_toward_the_head_limit(ops: OpsServer) -> None:
    # 10 KiB of path and 8 KiB of headers: each under 16 KiB, together over it
    head = (
        f"GET /?q={'a' * 10 * 1024} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {'b' * 8 * 1024}\r\n\r\n"
    ).encode()
    answer, closed = _answer_and_close(ops.port, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert closed
    fits = f"GET /healthz?q={'a' * 4096} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    answer, _ = _answer_and_close(ops.port, fits, timeout=2 * HEAD_TIMEOUT + 5)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


def test_a_request_line_sent_in_pieces_is_refused_once_it_passes_the_limit(ops: OpsServer) -> None:
    with socket.create_connection(("127.0.0.1", ops.port), timeout=10) as sock:
        sock.sendall(b"GET /")
        answer = b""
        for _ in range(40):  # up to 40 KiB, in 1 KiB pieces, never ending the line
            try:
                sock.sendall(b"a" * 1024)
            except (ConnectionResetError, BrokenPipeError):
                break
            time.sleep(0.01)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 414"), answer[:80]


def test_slow_header_connections_are_closed_and_cannot_starve_healthz(ops: OpsServer) -> None:
    slow: list[socket.socket] = []
    try:
        for n in range(32):  # as many as the server admits at once
            sock = socket.create_connection(("127.0.0.1", ops.port), timeout=10)
            if n % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)  # the others send nothing at all
        # Every slow connection is closed by the server (408 for a partial head), within bounds.
        for sock in slow:
            sock.settimeout(HEAD_TIMEOUT + 10)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
            assert received in (b"",) or received.startswith(b"HTTP/1.1 408"), received[:80]
        assert _healthz(ops.port) == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_kept_alive_connection_serves_requests_after_its_idle_time(ops: OpsServer) -> None:
    # The head timer runs from a request's first byte, not across an idle kept-alive connection.
    with httpx.Client(base_url=f"http://127.0.0.1:{ops.port}", timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(HEAD_TIMEOUT * 1.5)
        assert client.get("/healthz").status_code == 200


def test_a_stalled_body_closes_its_connection(ops: OpsServer) -> None:
    head = (
        b"POST /requests/PR-0001/retry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nnext=/"
    )
    answer, closed = _answer_and_close(ops.port, head, timeout=HEAD_TIMEOUT + 10)
    assert closed, answer[:80]
    assert _healthz(ops.port) == 200
