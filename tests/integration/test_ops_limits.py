"""Size limits on the local servers that take requests from elsewhere: the mock marketplace and the
mock vendor (the ops server's own limits are in test_ops_server.py). Each runs in uvicorn on a
loopback port, as the sandbox and the CLI run them: an oversized body is answered 413, whether it
announces its length or streams without one, and an oversized request head is refused before any
route runs. Ordinary requests right after still work: a refusal does not take the server down.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from cancel_sandbox.local import Sandbox
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
