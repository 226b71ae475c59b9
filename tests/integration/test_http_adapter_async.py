"""The http adapter's asynchronous operations against a scripted local server: a 202 read as an
operation (a body field, or the Location header), its poll, and hostile answers -- nonsense JSON,
an unknown state, a 500, a 404, a Location off the vendor's base URL -- each a clear error that
never reads as done."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from processor.adapters.base import (
    Accepted,
    AdapterError,
    Ambiguous,
    Done,
    Failed,
    OperationFailed,
    Pending,
    RetryLater,
    VendorCall,
)
from processor.adapters.http import HttpAdapter
from processor.model import CancelRequest

ASYNC = {"done": ["succeeded"], "failed": ["failed"], "pending": ["running"], "every": 2}


class Script:
    """Answers (status, headers, body bytes) in order; records each path asked."""

    def __init__(self) -> None:
        self.answers: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.paths: list[str] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            script.paths.append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            code, headers, body = script.answers.popleft()
            self.send_response(code)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def call() -> VendorCall:
    request = CancelRequest("PR-1234-5678-9012-001", "cancel", "pending", "AS-1", "PRD-1", "prod")
    return VendorCall(request, "SUB-1", "cancel-PR-1:terminate", extra={"step": "terminate"})


def answer(code: int, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return code, headers, raw


def test_a_202_with_an_operation_id_is_accepted_and_polled_at_its_path(
    server: tuple[str, Script],
) -> None:
    url, script = server
    spec = {**ASYNC, "operation_id": "job.id", "poll": "/v2/jobs/{operation_id}", "give_up": 60}
    adapter = HttpAdapter({"base_url": url, "terminate": {"async": spec}})
    script.answers.append(answer(202, {"job": {"id": "J-42"}}))
    accepted = adapter.terminate(call())
    assert accepted == Accepted("J-42", accepted.detail, after=2, give_up=60)  # type: ignore[union-attr]
    script.answers.extend(
        [
            answer(200, {"status": "running"}),
            answer(200, {"status": "failed", "error": "locked"}),
            answer(200, {"status": "succeeded"}),
        ]
    )
    poll = adapter.poll  # type: ignore[attr-defined]
    assert isinstance(poll(call(), "J-42"), Pending)
    failed = poll(call(), "J-42")
    assert isinstance(failed, OperationFailed) and "locked" in failed.detail
    assert isinstance(poll(call(), "J-42"), Done)
    assert script.paths[1:] == ["GET /v2/jobs/J-42"] * 3
    # An id that would change the URL is never sent.
    unsafe = poll(call(), "../admin")
    assert isinstance(unsafe, Failed) and len(script.paths) == 4


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (answer(200, b"<html>not json"), Failed),
        (answer(200, {"status": "exploded"}), Failed),
        (answer(200, {"state": "succeeded"}), Failed),
        (answer(500, {"error": "boom"}), RetryLater),
        (answer(503, {"error": "busy"}, **{"Retry-After": "7"}), RetryLater),
        (answer(404, {"error": "not_found"}), Failed),
        (answer(200, ["succeeded"]), Failed),
    ],
    ids=["nonsense", "unknown-state", "no-field", "500", "503", "404", "list"],
)
def test_a_hostile_poll_answer_is_never_done(
    server: tuple[str, Script], reply: Any, kind: type
) -> None:
    url, script = server
    adapter = HttpAdapter({"base_url": url, "terminate": {"async": {**ASYNC, "location": True}}})
    script.answers.append(reply)
    got = adapter.poll(call(), f"{url}/operations/OP-1")  # type: ignore[attr-defined]
    assert isinstance(got, kind), got
    if isinstance(got, RetryLater) and reply[0] == 503:
        assert got.after == 7


def test_the_location_is_polled_only_on_the_vendors_base_url(server: tuple[str, Script]) -> None:
    url, script = server
    adapter = HttpAdapter({"base_url": url, "terminate": {"async": {**ASYNC, "location": True}}})
    script.answers.append(answer(202, {"status": "pending"}, Location="/operations/OP-7"))
    accepted = adapter.terminate(call())
    assert isinstance(accepted, Accepted) and accepted.operation == f"{url}/operations/OP-7"
    elsewhere = adapter.poll(call(), "http://198.51.100.7/steal")  # type: ignore[attr-defined]
    assert isinstance(elsewhere, Failed) and "not on the vendor's base_url" in elsewhere.detail
    script.answers.append(answer(202, {"status": "pending"}))  # no Location: the call may act
    assert isinstance(adapter.terminate(call()), Ambiguous)
    assert script.paths == ["POST /v1/subscriptions/SUB-1/terminate"] * 2


def test_a_200_is_still_a_synchronous_termination(server: tuple[str, Script]) -> None:
    url, script = server
    adapter = HttpAdapter({"base_url": url, "terminate": {"async": {**ASYNC, "location": True}}})
    script.answers.append(answer(200, {"status": "terminated"}))
    assert type(adapter.terminate(call())).__name__ == "Terminated"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"location": True, "operation_id": "id"}, "terminate.async"),
        ({"operation_id": "id"}, "terminate.async.poll"),
        ({"operation_id": "id", "poll": "/x/{request_id}"}, "terminate.async.poll"),
        ({"location": True, "status": 404}, "terminate.async.status"),
        ({"location": True, "done": ["x"], "failed": ["x"]}, "terminate.async.failed"),
        ({"location": True, "every": 10, "give_up": 5}, "terminate.async.give_up"),
        ({"location": True, "typo": 1}, "terminate.async.typo"),
    ],
)
def test_an_async_option_that_cannot_work_is_refused_naming_it(spec: Any, named: str) -> None:
    with pytest.raises(AdapterError, match=f"option '{named}'"):
        HttpAdapter({"base_url": "http://127.0.0.1:9", "terminate": {"async": spec}})
