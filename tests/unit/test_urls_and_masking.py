"""The URL builder (processor.urls), the forms a secret is masked in (processor.observe), the
boundary's pieces (Content-Range, JSON limits, bounded bodies) and the model's limits."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from urllib.parse import quote, quote_plus

import pytest
import requests
from urllib3.response import HTTPResponse

from processor.adapters import VendorCall, load_adapter, with_default_check
from processor.marketplace.boundary import (
    MAX_DEPTH,
    Unreadable,
    api_error,
    content_range,
    parse_json,
    read_body,
)
from processor.model import MAX_PARAM_CHARS, TRUNCATED, MalformedRequest, parse_request
from processor.observe import mask_with, secret_forms
from processor.urls import UnsafeSegment, compile_rule, path, segment, segment_problem

from ..fakes import ScriptedAdapter, cancel_payload


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("request", "PR-1234-5678-9012-001"),
        ("asset", "AS-1234-5678-9012"),
        ("product", "PRD-123-456-789"),
        ("template", "TL-123-456-789"),
        ("conversation", "CO-123-456-789-012"),
        ("marketplace", "MP-12345"),
        ("request", "PR-A"),  # test doubles' ids: letters cannot change a path either
        ("subscription", "SUB-1"),
        ("vendor", "production"),
    ],
)
def test_a_valid_id_is_one_segment_as_it_is(kind: str, value: str) -> None:
    assert segment(kind, value) == value
    assert segment_problem(kind, value) is None


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        ("request", "../requests/PR-1", "is not a Connect request id"),
        ("request", "PR-../../x", "is not a Connect request id"),
        ("request", "PR-1%2F2", "is not a Connect request id"),
        ("request", "PR-1/approve", "is not a Connect request id"),
        ("request", "PR-1 2", "is not a Connect request id"),
        ("request", "PR-1\x00", "is not a Connect request id"),
        ("request", "PR-\u00fc", "is not a Connect request id"),
        ("request", "AS-1", "is not a Connect request id"),  # another kind's id
        ("request", "PR-" + "1" * 62, "longer than 64"),
        ("request", 12, "is not a text"),
        ("request", "", "is empty"),
        ("asset", "PR-1", "is not a Connect asset id"),
        ("subscription", "Infinity", "does not match the id rule"),
        ("subscription", "inf", "does not match the id rule"),
        ("subscription", "NaN", "does not match the id rule"),
        ("subscription", "-12", "does not match the id rule"),
        ("subscription", "SUB 1", "does not match the id rule"),
        ("subscription", "../admin", "holds a slash"),
        ("subscription", "a\\b", "holds a slash"),
        ("subscription", "..", "holds a dot segment"),
        ("subscription", "a..b", "holds a dot segment"),
        ("subscription", "SUB\u2028", "holds a control character"),
        ("subscription", "S" * 300, "longer than 256"),
        ("subscription", "  ", "is empty"),
        ("subscription", None, "is not a text"),
    ],
)
def test_a_value_that_is_no_segment_of_its_kind_is_refused(
    kind: str, value: object, problem: str
) -> None:
    found = segment_problem(kind, value)
    assert found is not None and problem in found
    with pytest.raises(UnsafeSegment, match=re.escape(problem)):
        segment(kind, value)


def test_a_segment_is_percent_encoded_whole() -> None:
    assert segment("subscription", "sub_1:7@acme.example") == "sub_1%3A7%40acme.example"


def test_the_error_never_echoes_a_long_or_control_filled_value() -> None:
    with pytest.raises(UnsafeSegment) as refused:
        segment("subscription", "x/" + "y" * 10_000 + "\n")
    assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)


def test_path_joins_literals_and_checked_segments() -> None:
    assert path("requests", ("request", "PR-1-2"), "approve") == "requests/PR-1-2/approve"
    with pytest.raises(UnsafeSegment):
        path("requests", ("request", "../x"), "approve")


def test_a_configured_rule_narrows_but_cannot_let_a_slash_through() -> None:
    rule = compile_rule(r".+")
    assert segment("subscription", "ACME 42", rule) == "ACME%2042"  # encoded as one segment
    assert "slash" in (segment_problem("subscription", "a/b", rule) or "")
    assert "dot segment" in (segment_problem("subscription", "..", rule) or "")
    with pytest.raises(ValueError, match="empty id"):
        compile_rule(r".*")
    with pytest.raises(re.error):
        compile_rule(r"(")


KEY = "ApiKey SU-123-456-789:0123456789abcdefghijklmnopqrstuv"
SECRET = KEY.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    "leak",
    [
        KEY,
        SECRET,
        KEY.split(" ", 1)[1],
        base64.b64encode(KEY.encode()).decode(),
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(KEY.split(" ", 1)[1].encode()).decode(),
        base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("="),
        quote(KEY, safe=""),
        quote_plus(KEY),
        quote(KEY, safe="").lower(),
    ],
)
def test_every_form_of_the_key_is_masked(leak: str) -> None:
    text = mask_with(f"Connect said: {leak}!", secret_forms(KEY))
    assert SECRET not in text and leak not in text and "***" in text


@pytest.mark.parametrize("prefix", ["", "a", "ab", "Authorization: ", '{"header": "'])
def test_the_key_is_masked_inside_base64_of_a_longer_text_at_any_alignment(prefix: str) -> None:
    encoded = base64.b64encode((prefix + KEY + " trailing").encode()).decode()
    masked = mask_with(encoded, secret_forms(KEY))
    assert "***" in masked
    # What is left cannot be decoded back to the secret.
    left = masked.replace("***", "")
    assert SECRET not in base64.b64decode(left + "=" * (-len(left) % 4), validate=False).decode(
        "latin-1"
    )


def test_short_values_are_not_masked_and_forms_are_longest_first() -> None:
    assert secret_forms("abc") == ()
    forms = secret_forms(KEY)
    assert list(forms) == sorted(forms, key=len, reverse=True) and KEY in forms


@pytest.mark.parametrize(
    ("header", "count"),
    [
        ("items 0-99/1234", 1234),
        ("items 0-0/0", 0),
        ("items 0-99/NaN", None),
        ("items 0-1/Infinity", None),
        ("items 0-1/-5", None),
        ("items 0-1/" + "9" * 40, None),
        ("bytes */1", None),
        ("items 0-1", None),
        ("", None),
        (None, None),
    ],
)
def test_content_range_is_read_defensively(header: str | None, count: int | None) -> None:
    found = content_range(header)
    assert (found.count if found else None) == count


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper than"),
        (b"[NaN]", "NaN"),
        (b"[Infinity]", "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[1e999]", "too large to be finite"),
        (b"[" + b"1" * 100 + b"]", "longer than 30 digits"),
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'["\xff"]', "utf-8"),
        (b"<html>", "Expecting value"),
        (b"[" + b",".join([b"[]"] * 210_000) + b"]", "more than"),
    ],
)
def test_json_beyond_the_limits_is_refused_with_the_reason(body: bytes, problem: str) -> None:
    with pytest.raises(Unreadable, match=re.escape(problem)):
        parse_json(body)


def test_brackets_inside_strings_are_text_not_nesting() -> None:
    deep_text = json.dumps({"note": "[" * 500 + '\\"{' * 100})
    assert parse_json(deep_text.encode())["note"].startswith("[[[")
    value = parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)  # exactly the limit is accepted
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def _streamed(body: bytes, encoding: str | None = None) -> requests.Response:
    headers = {"Content-Encoding": encoding} if encoding else {}
    raw = HTTPResponse(
        body=io.BytesIO(body), headers=headers, preload_content=False, decode_content=True
    )
    response = requests.Response()
    response.raw, response.status_code = raw, 200
    return response


def test_a_gzip_bomb_is_cut_at_the_cap_while_decoding() -> None:
    bomb = gzip.compress(b"a" * (8 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    with pytest.raises(Unreadable, match="larger than 1048576 bytes"):
        read_body(_streamed(bomb, "gzip"), limit=1024 * 1024)
    assert bytes(read_body(_streamed(gzip.compress(b"[1]"), "gzip"))) == b"[1]"


def test_a_body_that_drips_is_cut_at_the_time_budget() -> None:
    ticks = iter(range(0, 10_000, 50))  # each look at the clock: 50 s later
    body = json.dumps(["x" * 70_000] * 10).encode()  # several chunks
    with pytest.raises(Unreadable, match="longer than 60 s"):
        read_body(_streamed(body), seconds=60, clock=lambda: float(next(ticks)))
    assert bytes(read_body(_streamed(body), seconds=60)) == body


def test_an_error_body_of_the_wrong_shape_gives_no_details() -> None:
    assert api_error({"error_code": "REQ_005", "errors": ["no", 5]}) == {
        "error_code": "REQ_005",
        "errors": ["no"],
    }
    assert api_error({"error_code": 5, "errors": "x"}) is None
    assert api_error(5) is None and api_error(["x"]) is None
    long = api_error({"error_code": "E" * 500, "errors": ["x" * 5000] * 50})
    assert long is not None and len(long["error_code"]) == 100
    assert len(long["errors"]) == 10 and all(len(e) == 500 for e in long["errors"])


def test_customer_text_is_cut_with_a_marker_and_loses_control_characters() -> None:
    payload = cancel_payload(1)
    comment = "line one\nline two\x00\u2028" + "z" * 10_000_000
    payload["asset"]["params"].append({"id": "cancellation_comment", "value": comment})
    request = parse_request(payload)
    kept = request.params["cancellation_comment"]
    assert len(kept) == MAX_PARAM_CHARS and kept.endswith(TRUNCATED)
    assert kept.startswith("line one line two ") and "\x00" not in kept


@pytest.mark.parametrize(
    ("change", "request_id", "problem"),
    [
        ({"id": "../requests/PR-1"}, None, "is not a Connect request id"),
        ({"id": "PR-1\x00"}, None, "is not a Connect request id"),
        ({"id": 12}, None, "is not a text"),
        ({"asset.id": "../assets/AS-1"}, "PR-1", "asset id"),
        ({"asset.product.id": "PRD-1/x"}, "PR-1", "product id"),
        ({"marketplace": {"id": "MP-1 2"}}, "PR-1", "marketplace id"),
        ({"subscription": "S" * 300}, "PR-1", "longer than 256"),
        ({"subscription": "SUB\x001"}, "PR-1", "control character"),
        ({"asset.items": [{"id": "I", "quantity": [1]}]}, "PR-1", "quantity"),
    ],
)
def test_the_model_refuses_ids_of_the_wrong_grammar(
    change: dict[str, object], request_id: str | None, problem: str
) -> None:
    payload = cancel_payload(1)
    payload["id"] = "PR-1"
    for key, value in change.items():
        if key == "subscription":
            payload["asset"]["params"] = [{"id": "subscription_id", "value": value}]
            continue
        node = payload
        *parts, last = key.split(".")
        for part in parts:
            node = node[part]
        node[last] = value
    with pytest.raises(MalformedRequest) as refused:
        parse_request(payload)
    assert refused.value.request_id == request_id and problem in refused.value.problem


def test_a_number_that_is_not_finite_is_no_parameter_value() -> None:
    payload = cancel_payload(1)
    payload["asset"]["params"] = [{"id": "subscription_id", "value": float("inf")}]
    assert parse_request(payload).subscription_id is None
    payload["asset"]["params"] = [{"id": "subscription_id", "value": True}]
    assert parse_request(payload).subscription_id is None


def test_every_loaded_adapter_keeps_the_default_subscription_id_rule() -> None:
    request = parse_request(cancel_payload(1))
    bad = VendorCall(request, "-12", "key")
    good = VendorCall(request, "SUB-1", "key")
    scripted = with_default_check(ScriptedAdapter())  # what load_adapter does to each adapter
    assert "does not match the id rule" in (scripted.check_call("terminate", bad) or "")
    assert scripted.check_call("terminate", good) is None
    noop = load_adapter("noop", {}, name="noop")  # nothing is sent: any id will do
    assert noop.check_call("terminate", bad) is None  # type: ignore[attr-defined]
