"""OAuth2 client credentials for the ``http`` adapter (RFC 6749 4.4), through authlib.

Configured as the adapter's ``auth`` (read and checked at start-up by :mod:`.settings`)::

    auth:
      type: oauth2
      token_url: https://login.vendor.example.com/oauth/token
      client_id: cancel-processor            # not a secret
      env: VENDOR_CLIENT_SECRET              # the client secret: env (a variable) or file (a path)
      scope: subscriptions:write             # optional
      audience: https://api.vendor.example.com   # optional form field some vendors require
      client_auth: basic                     # basic (client_secret_basic, default) | post
      renew_before: 60                       # renew this many seconds before expiry (at most
                                             # half the token's lifetime)

authlib builds the token request (grant, scope, client authentication) and parses the answer;
this module keeps one token per adapter, shared by every calling thread: fetched on first need
(``cancel-processor check`` and the start-up checks ask for it first, so a bad secret shows at
start), renewed before it expires (on the monotonic clock, from ``expires_in``), and dropped when
the vendor answers 401 to it (:meth:`TokenSource.discard`), so that the next call fetches one --
once, however many threads saw the 401. Whether the call that got the 401 is repeated is the
adapter's decision (:func:`repeat_is_safe`).

A token endpoint that fails raises :class:`TokenError`: the vendor call was not sent. A 4xx (a
wrong secret, scope or client) is a definite error naming the token URL and the status; a 5xx,
429 or a failed connection is "retry later". Neither the secret nor any token appears in an error
or a repr; the adapter scrubs both from every text it makes (:meth:`TokenSource.secrets`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from processor.adapters.base import Failed, Idempotency, RetryLater
from processor.adapters.http.outcomes import unsent
from processor.adapters.http.settings import OAuthSettings, Operation

__all__ = ["TokenError", "TokenSource", "repeat_is_safe"]

_ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # an RFC 6749 5.2 error code, safe to echo


def repeat_is_safe(op: Operation, idempotency: Idempotency) -> bool:
    """May a call that got 401 be sent again with a renewed token? A status read changes nothing;
    a mutation only when the vendor makes a second one harmless (an idempotency key sent again, or
    natural idempotency). Otherwise the answer stands and the engine decides, as for any answer."""
    if op.statuses is not None:
        return True
    return idempotency in (Idempotency.KEY, Idempotency.NATURAL)


class TokenError(Exception):
    """The token endpoint gave no usable token; the vendor call was not sent."""

    def __init__(self, message: str, *, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite  # a 4xx or an unusable answer: the configuration is wrong

    def outcome(self, operation: str) -> RetryLater | Failed:
        text = f"{operation}: {self}; nothing was sent"
        return Failed(text) if self.definite else RetryLater(text)


@dataclass
class _Token:
    value: str = field(repr=False)
    renew_at: float | None  # monotonic; None: the vendor gave no lifetime


class TokenSource:
    """One adapter's token: fetched when needed, shared by every thread, renewed in time.

    ``request_options`` are the keyword arguments of every token request (timeout, verify, cert,
    proxies), the same as the adapter's own calls take.
    """

    def __init__(
        self,
        settings: OAuthSettings,
        request_options: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.fetched = 0  # tokens fetched so far (for tests and the curious)
        self._options = dict(request_options)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None
        # The last tokens, scrubbed from texts with the secret. A tuple replaced whole, so that a
        # thread scrubbing a text never reads it while a renewal changes it.
        self._recent: tuple[str, ...] = ()

    def token(self) -> str:
        """A live token; fetches one when there is none or it is due for renewal."""
        with self._lock:
            current = self._token
            if current is None or (
                current.renew_at is not None and self._clock() >= current.renew_at
            ):
                current = self._fetch()
            return current.value

    def discard(self, rejected: str) -> None:
        """The vendor answered 401 to ``rejected``: the next :meth:`token` fetches another, unless
        another thread has already replaced it (then that one is used: one renewal per 401ed
        token, however many threads saw the 401)."""
        with self._lock:
            if self._token is not None and self._token.value == rejected:
                self._token = None

    def secrets(self) -> tuple[str, ...]:
        return (self.settings.secret, *self._recent)

    def _fetch(self) -> _Token:
        # authlib (with joserfc and cryptography's x509) costs a third of a second of start-up;
        # only a vendor with OAuth2 pays it, on its first token. A restart after a crash is the
        # time nothing is processed.
        from authlib.integrations.base_client import OAuthError
        from authlib.integrations.requests_client import OAuth2Session

        s = self.settings
        session = OAuth2Session(
            s.client_id, s.secret, token_endpoint_auth_method=s.client_auth, scope=s.scope
        )
        session.trust_env = False  # no proxy, CA bundle or .netrc from the environment
        session.register_compliance_hook("access_token_response", self._check_status)
        extra = {"audience": s.audience} if s.audience else {}
        started = self._clock()
        try:
            with session:
                answer = session.fetch_token(
                    s.token_url,
                    grant_type="client_credentials",
                    **self._options,
                    **extra,
                )
        except TokenError:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            what = "could not connect" if unsent(exc) else "no whole answer"
            raise TokenError(
                f"token endpoint {s.token_url}: {what} ({type(exc).__name__})", definite=False
            ) from None
        except (OAuthError, ValueError) as exc:  # a 2xx carrying an error, or not JSON
            code = getattr(exc, "error", None)
            said = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            raise TokenError(
                f"token endpoint {s.token_url} gave no token{said}", definite=True
            ) from None
        token = self._usable(answer, started)
        self.fetched += 1
        self._recent = (*self._recent[-3:], token.value)
        self._token = token
        return token

    def _usable(self, answer: Mapping[str, Any], started: float) -> _Token:
        url = self.settings.token_url
        value = answer.get("access_token")
        kind = str(answer.get("token_type") or "bearer")
        if not isinstance(value, str) or not value.strip():
            raise TokenError(f"token endpoint {url} answered without access_token", definite=True)
        if kind.lower() != "bearer":
            raise TokenError(
                f"token endpoint {url} issued a {kind[:20]!r} token; only bearer is supported",
                definite=True,
            )
        lifetime = answer.get("expires_in")
        try:
            seconds = float(lifetime) if lifetime is not None else None
        except (TypeError, ValueError):
            seconds = None
        if seconds is None or not seconds > 0:
            return _Token(value, None)  # no lifetime known: renewed when the vendor answers 401
        # Timed from before the request left, so the token is renewed early rather than late.
        margin = min(self.settings.renew_before, seconds / 2)
        return _Token(value, started + seconds - margin)

    def _check_status(self, response: requests.Response) -> requests.Response:
        code = response.status_code
        if 200 <= code < 300:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        said = f" ({error})" if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else ""
        definite = 400 <= code < 500 and code != 429
        raise TokenError(
            f"token endpoint {self.settings.token_url} answered HTTP {code}{said}",
            definite=definite,
        )
