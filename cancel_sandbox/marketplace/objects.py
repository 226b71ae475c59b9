"""Connect's id formats, time formatting and parsing, and key identifiers.

Ids follow Connect's formats (``PR-1234-5678-9012-001`` derives from its subscription
``AS-1234-5678-9012``; ``PRD-123-456-789``, ``TL-123-456-789``, ``MP-12345``, ``CT-1234-5678-9012``,
``TA-1234-5678-9012``, ``PA-123-456``, ``VA-123-456``, ``HB-1234-5678``, ``CO-123-456-789``,
``ME-123-456-789``, ``CRD-12345-12345-12345``, ``UR-123-456-789``), drawn from a seeded random
source so generated data is reproducible, and never repeated within one store.

Times are aware UTC datetimes truncated to whole seconds, as Connect writes them
(``2021-12-23T09:09:25+00:00``); the truncation also makes ties in ``created`` common, which a
processor's keyset paging must handle.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "IdMaker",
    "iso",
    "parse_time",
    "whole_seconds",
    "key_identifier",
    "request_id",
    "user_object",
]


def whole_seconds(moment: datetime) -> datetime:
    """UTC, no microseconds: the precision Connect writes."""
    return moment.astimezone(UTC).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def parse_time(text: Any) -> datetime | None:
    """ISO 8601 with ``Z``, an offset, or none (UTC). A space where ``+`` was is accepted: query
    strings decoded as forms turn the offset's ``+`` into a space."""
    if text in (None, ""):
        return None
    if isinstance(text, datetime):
        value = text
    else:
        raw = str(text).strip()
        if raw.endswith("Z"):
            raw = raw[:-1] + "+00:00"
        if len(raw) > 6 and raw[-6] == " " and raw[-3] == ":":
            raw = raw[:-6] + "+" + raw[-5:]
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def key_identifier(api_key: str) -> str:
    """The non-secret part of an API key (``SU-000-000-000``), for ledgers; never the secret.

    A key without Connect's ``<id>:<secret>`` shape is identified by a short digest instead.
    """
    text = api_key.removeprefix("ApiKey ").strip()
    if ":" in text:
        return text.split(":", 1)[0]
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:10]


class IdMaker:
    """Connect-format ids from a seeded random source, never repeating within one store."""

    def __init__(self, rng: random.Random, taken: Callable[[str], bool] | None = None) -> None:
        self.rng = rng
        self._issued: set[str] = set()
        self._taken = taken or (lambda _id: False)

    def _groups(self, prefix: str, sizes: Iterable[int]) -> str:
        sizes = tuple(sizes)
        total = sum(sizes)
        for _ in range(1000):
            digits = f"{self.rng.randrange(10**total):0{total}d}"
            parts, position = [], 0
            for size in sizes:
                parts.append(digits[position : position + size])
                position += size
            candidate = "-".join([prefix, *parts])
            if candidate not in self._issued and not self._taken(candidate):
                self._issued.add(candidate)
                return candidate
        raise RuntimeError(f"could not find a free {prefix} id")  # 10^9+ space: not reached

    def asset(self) -> str:
        return self._groups("AS", (4, 4, 4))

    def product(self) -> str:
        return self._groups("PRD", (3, 3, 3))

    def template(self) -> str:
        return self._groups("TL", (3, 3, 3))

    def marketplace(self) -> str:
        return self._groups("MP", (5,))

    def connection(self) -> str:
        return self._groups("CT", (4, 4, 4))

    def account(self) -> str:
        return self._groups("TA", (4, 4, 4))

    def provider(self) -> str:
        return self._groups("PA", (3, 3))

    def vendor(self) -> str:
        return self._groups("VA", (3, 3))

    def hub(self) -> str:
        return self._groups("HB", (4, 4))

    def contract(self) -> str:
        return self._groups("CRD", (5, 5, 5))

    def user(self) -> str:
        return self._groups("UR", (3, 3, 3))

    def conversation(self) -> str:
        return self._groups("CO", (3, 3, 3))

    def message(self) -> str:
        return self._groups("ME", (3, 3, 3))

    def uid(self) -> str:
        """A UUID4-shaped external uid, reproducible from the seed."""
        time_low, time_mid, time_high, clock_seq, node = (
            self.rng.getrandbits(32),
            self.rng.getrandbits(16),
            self.rng.getrandbits(12),
            0x8000 | self.rng.getrandbits(14),
            self.rng.getrandbits(48),
        )
        return f"{time_low:08x}-{time_mid:04x}-4{time_high:03x}-{clock_seq:04x}-{node:012x}"


def request_id(asset_id: str, number: int) -> str:
    """Connect numbers a subscription's requests after it: AS-1-2-3 → PR-1-2-3-001, -002, ..."""
    return f"PR-{asset_id[3:]}-{number:03d}"


def user_object(*, user_id: str | None = None, email: str | None = None) -> dict[str, str]:
    """An assignee. Connect knows its users; the mock derives a stable one from what it is given."""
    if user_id:
        return {
            "id": user_id,
            "name": f"User {user_id}",
            "email": email or f"{user_id.lower()}@vendor.example",
        }
    assert email
    digest = int(hashlib.sha256(email.lower().encode()).hexdigest(), 16)
    derived = f"UR-{digest % 1000:03d}-{digest // 1000 % 1000:03d}-{digest // 10**6 % 1000:03d}"
    return {"id": derived, "name": email.split("@", 1)[0], "email": email}
