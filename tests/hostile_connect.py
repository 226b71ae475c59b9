"""A hostile stand-in for Connect: a small starlette app that answers the processor's listing with
one hostile answer at a time (:data:`CASES`), and records every request it gets.

The processor meets it in its own process (tests/process/test_hostile_connect.py) and, in process,
through the gateway (the property test). Each case is what a broken, compromised or merely
unusual server could send: nesting that exhausts a recursive parser, ``NaN`` where a number
belongs, bodies larger than memory once decoded, duplicate keys, wrong types at every level, ids
that are paths, texts that are megabytes, HTML where JSON was promised, a body cut short.

Every answer other than the listing is harmless (reads: 404; lists: empty), so what a case
exercises is the boundary, and an action the processor sends (``POST``/``PUT``) is recorded for
the test to find.
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["CASES", "ECHO_KEY", "Answer", "HostileConnect", "gzip_bomb", "row"]

JSON = "application/json"
CREATED = "2025-03-01T12:00:00+00:00"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body bytes, headers."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON


def row(request_id: Any = "PR-9000-0000-0000-001", **changes: Any) -> dict[str, Any]:
    """A cancel request as Connect lists it, with ``changes`` (dotted keys reach into blocks)."""
    data: dict[str, Any] = {
        "id": request_id,
        "type": "cancel",
        "status": "pending",
        "created": CREATED,
        "updated": CREATED,
        "asset": {
            "id": "AS-9000-0000-0000",
            "status": "active",
            "external_id": "EXT-1",
            "product": {"id": "PRD-900-000-000"},
            "connection": {"id": "CT-9000-0000-0000", "type": "production"},
            "tiers": {"customer": {"id": "TA-9000-0000-0000", "name": "Customer"}},
            "params": [{"id": "subscription_id", "value": "SUB-1"}],
            "items": [{"id": "PRD-900-000-000-0001", "mpn": "P", "quantity": "1"}],
        },
        "marketplace": {"id": "MP-12345"},
    }
    for key, value in changes.items():
        target = data
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return data


def _json(value: Any, **headers: str) -> Answer:
    # ASCII with \u escapes: a lone surrogate or a NUL arrives as valid JSON text that decodes
    # to it, which is what a hostile server would send.
    return Answer(json.dumps(value, allow_nan=True).encode("ascii"), headers=headers)


def _listing(*rows: Any, total: str | None = None) -> Answer:
    headers = {"Content-Range": total or f"items 0-{max(len(rows) - 1, 0)}/{len(rows)}"}
    return _json(list(rows), **headers)


_BOMB: dict[int, bytes] = {}
_BOMB_LOCK = threading.Lock()


def gzip_bomb(decoded_mb: int = 200) -> bytes:
    """A gzip body that decodes to ``decoded_mb`` MB of one JSON string (a list holding it),
    built once (about 200 KB)."""
    with _BOMB_LOCK:
        if decoded_mb not in _BOMB:
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
            parts = [packer.compress(b'["')]
            block = b"a" * (1024 * 1024)
            parts += [packer.compress(block) for _ in range(decoded_mb)]
            parts.append(packer.compress(b'"]') + packer.flush())
            _BOMB[decoded_mb] = b"".join(parts)
        return _BOMB[decoded_mb]


def _deep(count: int, opener: bytes, closer: bytes, inner: bytes = b"") -> Answer:
    return Answer(opener * count + inner + closer * count)


def _raw(text: str | bytes, **kwargs: Any) -> Answer:
    return Answer(text.encode() if isinstance(text, str) else text, **kwargs)


def _big_rows(chars: int) -> Answer:
    return _listing(row(**{"asset.params": [{"id": "subscription_id", "value": "S" * chars}]}))


# name -> (what it is, the answer to the listing). Rows that fail the boundary carry request ids
# starting PR-9000; none of them may be acted on.
CASES: dict[str, tuple[str, Callable[[], Answer]]] = {
    "deep_arrays": ("100,000 nested arrays", lambda: _deep(100_000, b"[", b"]")),
    "deep_objects": ("50,000 nested objects", lambda: _deep(50_000, b'{"a":', b"}", b"1")),
    "deep_in_a_row": (
        "a row whose asset nests 10,000 arrays",
        lambda: _raw(
            b'[{"id":"PR-9000-0000-0000-002","asset":' + b"[" * 10_000 + b"]" * 10_000 + b"}]"
        ),
    ),
    "nan_total": ("Content-Range total NaN", lambda: _listing(total="items 0-99/NaN")),
    "infinity_total": (
        "Content-Range total Infinity",
        lambda: _listing(total="items 0-1/Infinity"),
    ),
    "negative_total": ("Content-Range total -5", lambda: _listing(total="items 0-1/-5")),
    "huge_total": (
        "Content-Range total of 40 digits",
        lambda: _listing(total="items 0-1/" + "9" * 40),
    ),
    "garbage_range": ("Content-Range not a range", lambda: _listing(total="bytes */\x7f;;")),
    "nan_number": ("NaN in a row", lambda: _raw('[{"id":"PR-9000-0000-0000-003","n":NaN}]')),
    "infinity_number": (
        "Infinity as a number",
        lambda: _raw('[{"id":"PR-9000-0000-0000-004","n":-Infinity}]'),
    ),
    "overflow_number": (
        "1e999 (not finite)",
        lambda: _raw('[{"id":"PR-9000-0000-0000-005","n":1e999}]'),
    ),
    "long_integer": (
        "an integer of 5,000 digits",
        lambda: _raw('[{"id":"PR-9000-0000-0000-006","n":' + "7" * 5000 + "}]"),
    ),
    "duplicate_keys": (
        "duplicate keys (id twice)",
        lambda: _raw('[{"id":"PR-9000-0000-0000-007","id":"PR-9000-0000-0000-008"}]'),
    ),
    "huge_body": (
        "a 20 MB listing",
        lambda: _listing(
            *[row(f"PR-9000-0000-0001-{i:03d}", pad="x" * 200_000) for i in range(100)]
        ),
    ),
    "gzip_bomb": (
        "gzip that decodes to 200 MB",
        lambda: Answer(gzip_bomb(200), headers={"Content-Encoding": "gzip"}),
    ),
    "deflate_garbage": (
        "Content-Encoding gzip on bytes that are not gzip",
        lambda: Answer(b"\x1f\x8bnot really gzip", headers={"Content-Encoding": "gzip"}),
    ),
    "not_json_as_json": (
        "HTML sent as application/json",
        lambda: _raw("<html><body>Bad gateway</body></html>"),
    ),
    "html_200": (
        "an HTML page with 200",
        lambda: _raw("<html>login</html>", content_type="text/html"),
    ),
    "html_502": (
        "an HTML error page with 502",
        lambda: _raw("<html>502</html>", status=502, content_type="text/html"),
    ),
    "error_body_shapes": (
        "400 whose error body has the wrong types",
        lambda: _raw('{"error_code":5,"errors":"x"}', status=400),
    ),
    "error_body_scalar": ("400 whose body is a number", lambda: _raw("5", status=400)),
    "truncated": (
        "a body cut short (Content-Length says more)",
        lambda: Answer(b'[{"id":"PR-9000', headers={"Content-Length": "5000"}),
    ),
    "empty_json": ("an empty body as application/json", lambda: _raw(b"")),
    "not_utf8": ("bytes that are not UTF-8", lambda: _raw(b'["\xff\xfe\xfd"]')),
    "object_not_list": (
        "an object where a list belongs",
        lambda: _json({"id": "PR-9000-0000-0000-009"}),
    ),
    "rows_not_objects": (
        "a listing whose rows are not objects",
        lambda: _listing(1, "x", None, [], True, 2.5),
    ),
    "wrong_types": (
        "wrong types everywhere",
        lambda: _listing(
            {"id": 5, "asset": "x", "created": []},
            {"id": ["PR-9000-0000-0000-010"]},
            {"id": {"a": 1}, "created": CREATED},
            row("PR-9000-0000-0000-011", asset=[1, 2]),
            row("PR-9000-0000-0000-012", **{"asset.product": "PRD-1"}),
            row("PR-9000-0000-0000-013", **{"asset.params": {"id": "subscription_id"}}),
            row("PR-9000-0000-0000-014", **{"asset.items": [{"id": "I-1", "quantity": [1]}]}),
            row("PR-9000-0000-0000-015", created=12345),
            row("PR-9000-0000-0000-016", status=["pending"], type={"x": 1}),
        ),
    ),
    "path_ids": (
        "request ids that are paths or not ids",
        lambda: _listing(
            row("../requests/PR-9000-0000-0000-017"),
            row("PR-../../x"),
            row("PR-9000%2F0000"),
            row("PR-9000 0000"),
            row("PR-9000-\u00fc"),
            row("PR-9000-0000\x00"),
            row("PR-9000-\ud800"),
            row("PR-" + "1" * 100_000),
            row(" PR-9000-0000-0000-018 "),
            row(-12),
        ),
    ),
    "bad_inner_ids": (
        "valid request ids with hostile asset, product, marketplace, subscription ids",
        lambda: _listing(
            row("PR-9000-0000-0000-020", **{"asset.id": "../assets/AS-1"}),
            row("PR-9000-0000-0000-021", **{"asset.product.id": "PRD-1/templates"}),
            row("PR-9000-0000-0000-022", **{"marketplace.id": "MP-\u2028"}),
            row(
                "PR-9000-0000-0000-023",
                **{"asset.params": [{"id": "subscription_id", "value": -12}]},
            ),
            row(
                "PR-9000-0000-0000-024",
                **{"asset.params": [{"id": "subscription_id", "value": "../../admin"}]},
            ),
            row(
                "PR-9000-0000-0000-025",
                **{"asset.params": [{"id": "subscription_id", "value": "SUB\x00"}]},
            ),
            row(
                "PR-9000-0000-0000-026",
                **{"asset.params": [{"id": "subscription_id", "value": "Infinity"}]},
            ),
            row(
                "PR-9000-0000-0000-027",
                **{"asset.params": [{"id": "subscription_id", "value": "-12"}]},
            ),
            row("PR-9000-0000-0000-028", **{"asset.tiers.customer.id": "TA\n1"}),
        ),
    ),
    "overlong_subscription": ("a 1 MB subscription id", lambda: _big_rows(1_000_000)),
    "many_rows_bad_ids": (
        "1,000 rows whose ids are not ids",
        lambda: _listing(*[row(f"XX-{i}") for i in range(1000)]),
    ),
    "wide_object": (
        "an object with 300,000 keys",
        lambda: _raw(b"[{" + b",".join(b'"k%d":1' % i for i in range(300_000)) + b"}]"),
    ),
    "wide_allowed": (
        "an object with 240,000 keys (just under the values cap)",
        lambda: _raw(b"[{" + b",".join(b'"k%d":1' % i for i in range(240_000)) + b"}]"),
    ),
    "long_allowed": (
        "a 15 MB string in a row (just under the byte cap)",
        lambda: _listing(
            row("PR-9000-0000-0000-030", pad="p" * 15_000_000, **{"asset.params": []})
        ),
    ),
    "many_containers": (
        "a listing of 300,000 empty lists",
        lambda: _raw(b"[" + b",".join([b"[]"] * 300_000) + b"]"),
    ),
}


ECHO_KEY = "echo_key"  # a case of its own: the answer depends on the request


def _echo(header: str) -> Response:
    """A 400 whose error body echoes the API key in every form a server could: as it is, its
    secret part, base64 of the whole header and of the secret, URL-encoded."""
    secret = header.rsplit(":", 1)[-1]
    forms = [
        header,
        secret,
        base64.b64encode(header.encode()).decode(),
        base64.b64encode(f"Authorization: {header}".encode()).decode(),
        base64.b64encode(secret.encode()).decode(),
        quote(header, safe=""),
        quote_plus(header),
    ]
    body = {"error_code": "AUTH_ECHO", "errors": [f"you sent {form}" for form in forms]}
    return Response(json.dumps(body).encode(), 400, media_type=JSON)


class HostileConnect:
    """The app and its records: ``case`` names what the listing answers now; ``seen`` is every
    (method, path) received, in order."""

    def __init__(self) -> None:
        self.case = "empty"
        self.custom: Answer | None = None  # served instead of a named case (serve())
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str]] = []  # (method, decoded path, path as sent)
        self.app = Starlette(
            routes=[
                Route(
                    "/public/v1/{path:path}", self._answer, methods=["GET", "POST", "PUT", "DELETE"]
                )
            ]
        )

    def set_case(self, name: str) -> int:
        """Serve ``name`` from now on; returns how many requests were seen before."""
        with self.lock:
            self.case, self.custom = name, None
            return len(self.seen)

    def serve(self, answer: Answer) -> int:
        """Serve ``answer`` to the listing from now on; returns how many requests were seen."""
        with self.lock:
            self.custom = answer
            return len(self.seen)

    def listings_since(self, mark: int) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.seen[mark:] if m == "GET" and p == "requests")

    def raw_since(self, mark: int) -> list[tuple[str, str]]:
        """(method, path exactly as sent, percent-encoding kept) of every request since
        ``mark``."""
        with self.lock:
            return [(m, raw) for m, _, raw in self.seen[mark:]]

    def actions(self) -> list[tuple[str, str]]:
        """Every call that would change something on Connect."""
        with self.lock:
            return [(m, p) for m, p, _ in self.seen if m != "GET"]

    async def _answer(self, request: Request) -> Response:
        path = request.path_params["path"]
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        with self.lock:
            self.seen.append((request.method, path, raw))
            case, custom = self.case, self.custom
        if request.method != "GET":
            return Response(b'{"error_code":"HOSTILE","errors":["no"]}', 400, media_type=JSON)
        if path == "requests" and case == ECHO_KEY:
            return _echo(request.headers.get("Authorization", ""))
        if path == "requests" and (custom is not None or case in CASES):
            answer = custom if custom is not None else CASES[case][1]()
            headers = {"Content-Type": answer.content_type, **answer.headers}
            return Response(answer.body, answer.status, headers=headers)
        if path.startswith("requests/"):
            return Response(b'{"error_code":"NF","errors":["not found"]}', 404, media_type=JSON)
        return Response(b"[]", 200, headers={"Content-Range": "items 0-0/0"}, media_type=JSON)
