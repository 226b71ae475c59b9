"""Stripe-like Idempotency-Key records for the mock vendor's ``key`` mode.

A key is bound to the first request that used it, by a fingerprint of method, path (with query)
and the request body as canonical JSON (so key order and whitespace do not matter; an empty body
equals ``{}``). Then:

- same key, same fingerprint, first one finished: replay its stored status and body, do nothing;
- same key, same fingerprint, first one still running: 409 ``idempotency_key_in_use``;
- same key, different fingerprint: 422 ``idempotency_key_reuse``.

As at Stripe, only requests that reached the action are stored: an authentication failure, a bad
body or a conflict leaves nothing behind, and a request that crashed releases its key so that a
retry can run. Keys never expire (Stripe keeps them 24 hours); one record is about 300 bytes.
Keys are scoped to the whole vendor, not per token: the mock has one tenant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cancel_sandbox.vendor.persist import SqliteStore

__all__ = ["MAX_KEY_LENGTH", "KeyRecord", "KeyStore", "fingerprint"]

MAX_KEY_LENGTH = 255


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class KeyRecord:
    fingerprint: str
    status_code: int | None = None  # None while the first request is in flight
    body: dict[str, Any] | None = None

    @property
    def in_flight(self) -> bool:
        return self.status_code is None


class KeyStore:
    def __init__(self, store: SqliteStore | None = None) -> None:
        self._store = store
        self._records: dict[str, KeyRecord] = {}
        if store is not None:
            for key, fp, status_code, body in store.load_keys():
                self._records[key] = KeyRecord(fp, status_code, body)

    def get(self, key: str) -> KeyRecord | None:
        return self._records.get(key)

    def completed(self, key: str) -> bool:
        """Whether a request with ``key`` finished (its answer is stored for replays)."""
        record = self._records.get(key)
        return record is not None and not record.in_flight

    def begin(self, key: str, fp: str) -> None:
        """Reserve ``key`` for a request about to act (in memory only: a vendor that dies
        mid-request forgets the reservation, and the client's retry runs afresh)."""
        self._records[key] = KeyRecord(fp)

    def complete(self, key: str, status_code: int, body: dict[str, Any]) -> None:
        record = self._records.get(key)
        if record is None:  # an admin reset forgot it while the request ran
            return
        record.status_code, record.body = status_code, body
        if self._store is not None:
            self._store.put_key(key, record.fingerprint, status_code, body)

    def release(self, key: str) -> None:
        """Forget an in-flight reservation whose request did not finish."""
        record = self._records.get(key)
        if record is not None and record.in_flight:
            del self._records[key]

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
