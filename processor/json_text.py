"""JSON from outside, read within limits: the one parser for every answer the processor reads
(Connect's, through :mod:`processor.marketplace.boundary`; a vendor's, through the http
adapter's transport).

:func:`parse` refuses, with :class:`Refused` saying why (never quoting the text):

- nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_CONTAINERS` arrays and objects or
  :data:`MAX_VALUES` values, found on the text before parsing (neither the parser's recursion
  nor its memory is spent on it: what a parsed answer costs grows with them, not its bytes);
- ``NaN``/``Infinity`` and numbers too large to be finite (Python's parser takes them; JSON has
  none, and a NaN compares unequal to itself wherever it travels);
- integers longer than :data:`MAX_INT_DIGITS` digits (an int of 5,000 digits costs quadratic
  time to convert, and no id or amount is one);
- duplicate keys (two readers may take different ones: the id a check reads must be the id
  an action uses);
- text that is not UTF-8 JSON.

A lone surrogate (``"\\ud800"``: valid JSON, not a character; no file, log line, database or
vendor body can encode it) becomes U+FFFD, once, here, rather than failing wherever the text
travels. Only an answer whose raw text holds a surrogate escape is walked for it, so an
ordinary answer pays one regex search.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_CONTAINERS", "MAX_DEPTH", "MAX_INT_DIGITS", "MAX_VALUES", "Refused", "parse"]

MAX_DEPTH = 64  # a request payload nests ~6 deep
MAX_CONTAINERS = 200_000  # arrays and objects in one answer (~70 per real request)
MAX_VALUES = 250_000  # values in one answer, counted by their commas (~200 per real request)
MAX_INT_DIGITS = 30
# An escaped surrogate (``\ud800``); JSON text holds no other way to write one (raw, it is not
# UTF-8). A valid pair decodes to one code point; what a parse leaves is a lone half.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # an escape in a string: \" and \\ are not quotes
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_PARENTHESES = bytes.maketrans(b"[{]}", b"(())")  # an opening bracket is (, a closing one )


class Refused(ValueError):
    """JSON text outside the limits; the message says why, never quoting the text."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number too large to be finite")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup[:40]!r} in an object")
    return result


def _depth_problem(data: bytes | bytearray) -> str | None:
    """Nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_CONTAINERS` containers,
    found on the text before parsing (so neither the parser's recursion nor its memory is spent
    on it). Strings are removed first (their brackets are text), then only brackets are read:
    each pass of ``replace`` takes away every innermost pair, so brackets that balance and nest
    ``n`` deep are gone after ``n`` passes; only what is still there after :data:`MAX_DEPTH`
    passes (deeper, or unbalanced) is walked bracket by bracket. A 100-request page costs 1-1.5 ms
    this way, 6-7 ms with a regular expression removing each string and a walk in Python."""
    if data.count(b",") > MAX_VALUES:  # an upper bound: commas in strings count too
        return f"more than {MAX_VALUES} values"
    opened = data.count(b"[") + data.count(b"{")
    if opened <= MAX_DEPTH:
        return None  # cannot nest deeper than it opens
    if opened > MAX_CONTAINERS:
        return f"more than {MAX_CONTAINERS} arrays and objects"
    brackets = _outside_strings(data).translate(_PARENTHESES)
    left = brackets
    for _ in range(MAX_DEPTH):
        left = left.replace(b"()", b"")
        if not left:
            return None
    depth = 0
    for byte in brackets:
        if byte == 0x28:  # (
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
        else:
            depth -= 1
    return None


def _outside_strings(data: bytes | bytearray) -> bytes:
    """The brackets of ``data`` outside its strings: escapes go first (``\\"`` is no quote),
    then all but quotes and brackets; every quote pairs with the next, as JSON's strings do, so
    two quotes side by side (a string without brackets, or the end of one and the start of the
    next) go without changing which brackets are inside a string; a last quote never closed
    keeps what follows it. For text that is not JSON (a backslash outside a string) it may
    differ from a tokenizer's reading, but only after the first place where the parser stops."""
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    marks = bytes(data.translate(None, _NOT_QUOTES_OR_BRACKETS)).replace(b'""', b"")
    if b'"' not in marks:
        return marks
    parts = marks.split(b'"')
    kept = parts[::2]
    if len(parts) % 2 == 0:  # an odd number of quotes: the last one opens a string never closed
        kept.append(parts[-1])
    return b"".join(kept)


def _whole_characters(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD (keys too). A lone half is not a
    character: no file, log line, database or vendor body can encode it, so it is replaced here,
    once, rather than failing wherever the text travels. Only run when the raw text holds a
    surrogate escape, so an ordinary answer pays one regex search."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_whole_characters(k): _whole_characters(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_characters(v) for v in value]
    return value


def parse(data: bytes | bytearray) -> Any:
    """JSON text as Python values, within the limits in the module docstring; raises
    :class:`Refused` saying why."""
    problem = _depth_problem(data)
    if problem is not None:
        raise Refused(problem)
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_integer,
            object_pairs_hook=_unique,
        )
        return _whole_characters(value) if _SURROGATE_ESCAPE.search(data) else value
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise Refused(reason[:120]) from None
