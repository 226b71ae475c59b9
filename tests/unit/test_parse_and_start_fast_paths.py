"""Cheaper ways to the same answers: the JSON depth check before parsing reads the brackets
outside strings with a few passes over bytes instead of a regular expression per string and a walk
in Python, and must agree with that reading; connect-openapi-client's help formatter is imported
on first use, not at every start, and still formats."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

from processor.json_text import MAX_CONTAINERS, MAX_DEPTH, MAX_VALUES, _depth_problem

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)  # the reading the check had before
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _walked(data: bytes) -> str | None:
    if data.count(b",") > MAX_VALUES:
        return f"more than {MAX_VALUES} values"
    opened = data.count(b"[") + data.count(b"{")
    if opened <= MAX_DEPTH:
        return None
    if opened > MAX_CONTAINERS:
        return f"more than {MAX_CONTAINERS} arrays and objects"
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
    return None


_TEXTS = ["a[b", "}}]]", 'q"[[', "x\\", "\\u005b", "{[", "", "plain"]


def _value(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth > 75 or roll < 0.3:
        return rng.choice([1, None, *_TEXTS])
    if roll < 0.65:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}{rng.choice(_TEXTS)}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_the_depth_check_agrees_with_a_walk_of_every_bracket_outside_strings() -> None:
    rng = random.Random(28)
    for _ in range(3000):
        wrap = rng.randint(0, 80)
        text = "[" * wrap + json.dumps(_value(rng, wrap)) + "]" * wrap
        for data in (text.encode(), text.encode()[: rng.randint(1, len(text))]):  # cut: unclosed
            assert _depth_problem(data) == _walked(data), data[:120]


def test_brackets_in_strings_never_count_and_an_unclosed_string_keeps_its_brackets() -> None:
    inside = json.dumps(["[" * 200, '\\"' + "{" * 200, {"[" * 100: "]" * 100}]).encode()
    assert _depth_problem(inside) is None
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert _depth_problem(b'["a",' + deep + b"]") == f"nested deeper than {MAX_DEPTH} levels"
    too_deep = f"nested deeper than {MAX_DEPTH} levels"
    assert _depth_problem(b'"' + deep) == _walked(b'"' + deep) == too_deep  # never closed: counted
    assert _depth_problem(b'"x" "' + deep) == _walked(b'"x" "' + deep) == too_deep
    assert _depth_problem(b'"x\\\\"' + deep) == too_deep  # a backslash, escaped: closed
    assert _depth_problem(b'"x\\" ' + deep + b'"') is None  # an escaped quote: one text


def test_the_client_help_formatter_is_imported_on_first_use_and_still_formats() -> None:
    code = (
        "import sys, processor\n"
        "from connect.client import ConnectClient\n"
        "client = ConnectClient('ApiKey SU-1:x', use_specs=False)\n"
        "print(sorted(m for m in ('inflect', 'typeguard', 'rich.markdown') if m in sys.modules))\n"
        "print(bool(client._help_formatter.format(client)))\n"
        "print('inflect' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:3] == ["[]", "True", "True"]
