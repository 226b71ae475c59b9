"""One call of the ``http`` adapter on the wire: the hooks around it, in order.

1. OAuth2 (:mod:`.http_oauth`): a live token in the Authorization header; a token endpoint that
   fails ends the call with its outcome, nothing sent.
2. The rate limit (:mod:`.rate`): wait for a slot.
3. Send, read the body within its limit; a transport failure is the adapter's to read.
4. OAuth2 again: a 401 drops the token and, when a second call is harmless
   (:func:`~.http_oauth.repeat_is_safe`), sends once more with a new one; otherwise the 401 stands
   with a note saying why it was not repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import requests
import urllib3

from processor.adapters.base import Ambiguous, Failed, Outcome, RetryLater, SubscriptionStatus
from processor.adapters.http_oauth import TokenError, repeat_is_safe
from processor.adapters.http_outcomes import Operation
from processor.adapters.http_transport import read_body

if TYPE_CHECKING:
    from processor.adapters.http import HttpAdapter

__all__ = ["Answer", "noted", "send"]


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    headers: Mapping[str, str]
    raw: bytes
    note: str = ""  # appended to a failed outcome's detail (why a 401 was not repeated)


def send(
    adapter: HttpAdapter,
    op: Operation,
    url: str,
    body: Any,
    headers: dict[str, str],
    may_send: Callable[[], str | None] | None = None,
) -> Answer | Outcome:
    """Send ``op`` (see the module docstring): the vendor's answer, or the outcome that ended it.
    ``may_send`` (the call's :meth:`~processor.adapters.base.VendorCall.send_problem`) is asked
    after every wait, just before the request leaves; a reason not to send ends the call with
    :class:`RetryLater`, nothing sent."""
    answer: Answer | None = None
    for renewed in (False, True):
        token = None
        if adapter.tokens is not None:
            try:
                token = adapter.tokens.token()
            except TokenError as exc:
                if answer is None:
                    return exc.outcome(op.name)
                return replace(answer, note=f"; renewing the token failed ({exc})")
            headers["Authorization"] = f"Bearer {token}"
        if adapter.rate is not None:
            adapter.rate.acquire(adapter.name)
        if may_send is not None and (why := may_send()) is not None:
            return RetryLater(f"{op.name}: not sent: {why}")
        try:
            options = adapter.transport_options()
            response = adapter._session().request(
                op.method, url, json=body, headers=headers, **options, stream=True
            )
            with response:
                answer = Answer(response.status_code, response.headers, read_body(response))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            return adapter._transport(op, exc)
        if answer.code != 401 or token is None or renewed:
            return answer
        # The token was refused (expired early, revoked): renew it once. Repeat the call only
        # when a second one is harmless; otherwise its 401 stands and the next attempt, which
        # the engine decides, fetches the new token.
        assert adapter.tokens is not None
        adapter.tokens.discard(token)
        if not repeat_is_safe(op, adapter.idempotency):
            return replace(
                answer, note="; not repeated (no idempotency): the next call gets a new token"
            )
    raise AssertionError("unreachable: the second pass always returns")


def noted(outcome: Outcome | SubscriptionStatus, note: str) -> Outcome | SubscriptionStatus:
    if note and isinstance(outcome, (Failed, Ambiguous, RetryLater)):
        return replace(outcome, detail=outcome.detail + note)
    return outcome
