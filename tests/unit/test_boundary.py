"""The boundary's readings of what Connect sends, case by case (the property tests in
tests/integration/test_hostile_property.py generate the rest)."""

from __future__ import annotations

import pytest

from processor.marketplace.boundary import ContentRange, Unreadable, content_range, parse_json


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("items 0-9/10", ContentRange(0, 9, 10)),
        (" items 0-9/10 ", ContentRange(0, 9, 10)),
        ("items 0-9/*", None),
        ("items \uff10-9/10", None),  # fullwidth digits: int() reads them, Connect never sends them
        ("items 0-9/\u0661\u0660", None),  # Arabic-Indic digits
        ("items 0-9/1e3", None),
        ("items 0-9/" + "9" * 16, None),
        ("items -1-9/10", None),
        (None, None),
        (12, None),
    ],
)
def test_content_range_reads_ascii_digits_or_says_unknown(header: object, expected: object) -> None:
    assert content_range(header) == expected


def test_a_lone_surrogate_becomes_a_replacement_character_and_a_pair_stays_whole() -> None:
    body = rb'{"name": "\ud83d\ude00 \ud800", "\udc00key": ["\udfff", "\\ud800 stays text"]}'
    assert parse_json(body) == {
        "name": "\U0001f600 \ufffd",
        "\ufffdkey": ["\ufffd", "\\ud800 stays text"],
    }


@pytest.mark.parametrize(
    "body", [b'{"a": NaN}', b'{"a": 1e999}', b'{"a": 1, "a": 2}', b"\xff", b"[" * 65 + b"]" * 65]
)
def test_what_json_allows_but_no_reader_should_is_refused(body: bytes) -> None:
    with pytest.raises(Unreadable):
        parse_json(body)
