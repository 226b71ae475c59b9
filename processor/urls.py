"""The one way a value from data (Connect's or the vendor's) becomes part of a URL path.

Every id the processor puts into a path, on Connect (``/requests/{id}/approve``, conversations,
templates, assets) or at the vendor (``/v1/subscriptions/{subscription_id}/terminate``), goes
through :func:`segment`: the value is checked for its kind, then percent-encoded as exactly one
path segment. A value that cannot be a segment of its kind raises :class:`UnsafeSegment` before
anything is sent: ``../requests/PR-1`` never becomes another path, ``Infinity`` or ``-12`` is no
subscription id, and a 10 MB "id" never becomes a 10 MB URL.

Connect's ids (:data:`CONNECT_KINDS`) are a prefix for their kind (``PR-`` a request, ``AS-`` an
asset, ``PRD-`` a product, ``TL-`` a template, ``CO-`` a conversation, ``MP-`` a marketplace, ...)
followed by groups of ASCII letters and digits joined by single hyphens, at most
:data:`MAX_CONNECT_ID` characters: ``PR-1234-5678-9012-001``. Connect itself writes digits only;
letters are accepted in the groups because they cannot change a path either, and test doubles use
them (``PR-A``).

Vendor values (``subscription`` and the other vendor-side kinds) follow a rule: by default
:data:`VENDOR_ID`, conservative on purpose (letters, digits, ``.``, ``_``, ``:``, ``@``, ``-``,
starting with a letter or digit, at most 128 characters, not ``inf``, ``infinity`` nor ``nan``
in any case); an adapter may configure its own
pattern (``subscription_id_pattern``), which narrows what it accepts but never lets a slash, a
backslash, a dot segment, a control character or an overlong value through.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

__all__ = [
    "CONNECT_KINDS",
    "MAX_CONNECT_ID",
    "MAX_SEGMENT",
    "VENDOR_ID",
    "UnsafeSegment",
    "compile_rule",
    "connect_id_problem",
    "path",
    "segment",
    "segment_problem",
]

MAX_CONNECT_ID = 64
MAX_SEGMENT = 256  # any vendor value, whatever its rule says

# kind -> the prefix its ids carry on Connect.
CONNECT_KINDS: dict[str, str] = {
    "request": "PR-",
    "asset": "AS-",
    "product": "PRD-",
    "template": "TL-",
    "conversation": "CO-",
    "marketplace": "MP-",
    "tier_account": "TA-",
    "connection": "CT-",
    "item": "PRD-",
}
_CONNECT_BODY = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
# Not the printed forms of non-numbers (a float that was NaN or infinite somewhere upstream).
VENDOR_ID = re.compile(r"(?!(?i:inf|infinity|nan)$)[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UnsafeSegment(ValueError):
    """A value that cannot be one path segment of its kind; nothing was sent."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"{kind} id {problem}")
        self.kind = kind
        self.problem = problem


def shown(value: Any, limit: int = 40) -> str:
    """A value as an error message may quote it: short, on one line, no control characters."""
    text = _CONTROL.sub("?", repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def connect_id_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not a Connect id of ``kind``, or None."""
    prefix = CONNECT_KINDS[kind]
    if not isinstance(value, str):
        return f"is not a text (got {shown(value)})"
    if not value:
        return "is empty"
    if len(value) > MAX_CONNECT_ID:
        return f"is longer than {MAX_CONNECT_ID} characters ({len(value)})"
    if not value.startswith(prefix) or not _CONNECT_BODY.fullmatch(value[len(prefix) :]):
        return f"{shown(value)} is not a Connect {kind} id ({prefix}<digits>-...)"
    return None


def compile_rule(pattern: str) -> re.Pattern[str]:
    """An adapter's id rule from its configured pattern (matched whole). Raises ``re.error`` or
    ``ValueError`` for a pattern that is no regular expression or matches nothing useful."""
    rule = re.compile(pattern)
    if rule.fullmatch(""):
        raise ValueError("the pattern matches an empty id")
    return rule


def segment_problem(kind: str, value: Any, rule: re.Pattern[str] | None = None) -> str | None:
    """Why ``value`` cannot be one path segment of ``kind``, or None. Connect kinds follow
    Connect's grammar; any other kind follows ``rule`` (default :data:`VENDOR_ID`) and the limits
    no rule can lift."""
    if kind in CONNECT_KINDS:
        return connect_id_problem(kind, value)
    if not isinstance(value, str):
        return f"is not a text (got {shown(value)})"
    if not value.strip():
        return "is empty"
    if len(value) > MAX_SEGMENT:
        return f"is longer than {MAX_SEGMENT} characters ({len(value)})"
    if "/" in value or "\\" in value:
        return f"{shown(value)} holds a slash"
    if value in (".", "..") or ".." in value:
        return f"{shown(value)} holds a dot segment"
    if _CONTROL.search(value):
        return f"{shown(value)} holds a control character"
    if not (rule or VENDOR_ID).fullmatch(value):
        pattern = (rule or VENDOR_ID).pattern
        return f"{shown(value)} does not match the id rule {shown(pattern, 60)}"
    return None


def segment(kind: str, value: Any, rule: re.Pattern[str] | None = None) -> str:
    """``value`` checked for ``kind`` and percent-encoded as exactly one path segment; raises
    :class:`UnsafeSegment` otherwise."""
    problem = segment_problem(kind, value, rule)
    if problem is not None:
        raise UnsafeSegment(kind, problem)
    return quote(value, safe="")


def path(*parts: str | tuple[str, Any]) -> str:
    """A path from literal parts (written by the processor, never from data) and ``(kind,
    value)`` pairs, each pair one checked segment: ``path("requests", ("request", rid),
    "approve")`` is ``requests/PR-1/approve``."""
    return "/".join(p if isinstance(p, str) else segment(p[0], p[1]) for p in parts)
