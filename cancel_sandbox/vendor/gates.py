"""What stands before the mock vendor's API when it plays a stricter vendor: OAuth2 tokens and a
rate limit. Both are off by default (the static bearer token, no limit).

- :class:`TokenIssuer`: ``POST /oauth/token`` with ``grant_type=client_credentials`` and the client
  id and secret (HTTP Basic, or ``client_id``/``client_secret`` in the form, RFC 6749 2.3.1)
  answers ``{"access_token", "token_type": "Bearer", "expires_in"}``; a wrong client is 401
  ``invalid_client``, another grant 400 ``unsupported_grant_type``. Tokens are random and live
  ``lifetime`` seconds; the API answers 401 ``invalid_token`` (with ``WWW-Authenticate``) to an
  expired or unknown one, and counts both.
- :class:`RateGate`: at most ``calls`` API calls in each fixed window of ``per`` seconds on the
  wall clock (windows start at multiples of ``per`` since the epoch, so the ledger's timestamps
  show them); the next is answered 429 with ``Retry-After`` (whole seconds to the window's end,
  at least 1) and counted. Token and admin calls are not limited.

Secrets (the client secret, the tokens) appear in no answer but the token response itself, and in
no repr. Limits: tokens are kept in memory until they expire (pruned as they are checked).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["GateCounts", "RateGate", "TokenIssuer"]


@dataclass
class GateCounts:
    """What the gates did, for ``/admin/ledger``'s summary."""

    tokens_issued: int = 0
    token_refusals: int = 0  # wrong client, wrong grant, malformed request
    expired_token_calls: int = 0
    unknown_token_calls: int = 0
    rate_limited_calls: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class TokenIssuer:
    client_id: str
    client_secret: str = field(repr=False)
    lifetime: float
    counts: GateCounts = field(default_factory=GateCounts)
    clock: Callable[[], float] = time.monotonic
    _tokens: dict[str, float] = field(default_factory=dict, repr=False)  # token -> expiry
    _issued: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def issue(
        self, authorization: str, form: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The token endpoint's answer: (status, JSON body, headers)."""
        no_store = {"Cache-Control": "no-store"}
        client = _basic(authorization) or (form.get("client_id"), form.get("client_secret"))
        if not self._client_ok(*client):
            with self._lock:
                self.counts.token_refusals += 1
            challenge = {**no_store, "WWW-Authenticate": 'Basic realm="token"'}
            return 401, {"error": "invalid_client"}, challenge
        if form.get("grant_type") != "client_credentials":
            with self._lock:
                self.counts.token_refusals += 1
            return 400, {"error": "unsupported_grant_type"}, no_store
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self.clock() + self.lifetime
            self._issued.append(token)
            self.counts.tokens_issued += 1
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        return 200, body, no_store

    def check(self, token: str) -> str | None:
        """None for a live token, else ``expired`` or ``unknown`` (counted)."""
        now = self.clock()
        with self._lock:
            expiry = self._tokens.get(token)
            if expiry is not None and expiry > now:
                return None
            if expiry is not None:
                self.counts.expired_token_calls += 1
                problem = "expired"
            else:
                self.counts.unknown_token_calls += 1
                problem = "unknown"
            # Forget what expired long ago, so the table stays as small as the live tokens.
            for old in [t for t, e in self._tokens.items() if e < now - 3600]:
                del self._tokens[old]
            return problem

    def issued_tokens(self) -> list[str]:
        """Every token issued since start, for tests that search output for them."""
        with self._lock:
            return list(self._issued)

    def reset(self) -> None:
        """Forget every token (revoked): the next call with one is answered 401."""
        with self._lock:
            self._tokens.clear()

    def _client_ok(self, client_id: str | None, secret: str | None) -> bool:
        if client_id is None or secret is None:
            return False
        same_id = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        same_secret = hmac.compare_digest(secret.encode(), self.client_secret.encode())
        return same_id and same_secret


def _basic(authorization: str) -> tuple[str, str] | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    # RFC 6749 2.3.1: the id and secret are form-urlencoded before Basic encoding.
    return (unquote(user.replace("+", " ")), unquote(password.replace("+", " "))) if sep else None


@dataclass
class RateGate:
    calls: int
    per: float
    counts: GateCounts = field(default_factory=GateCounts)
    clock: Callable[[], float] = time.time
    _window: int = -1
    _used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.calls < 1 or not 0 < self.per < math.inf:
            raise ValueError("the rate limit needs calls >= 1 and per > 0 seconds")

    def admit(self) -> int | None:
        """None when the call may go on; else the Retry-After seconds of its 429 (counted)."""
        now = self.clock()
        window = math.floor(now / self.per)
        with self._lock:
            if window != self._window:
                self._window, self._used = window, 0
            if self._used < self.calls:
                self._used += 1
                return None
            self.counts.rate_limited_calls += 1
        return max(1, math.ceil((window + 1) * self.per - now))
