"""The typed errors of the marketplace gateway.

Callers branch on the class, never on message text: :class:`TransientError` means "try again
later" (``retry_after`` says when, if Connect said so), :class:`NotPending` means the request has
moved on (``status`` says where), :class:`ActionRefused` is Connect's definite "no" to a call,
:class:`NotFound` and :class:`Unauthorized` are what they say. Messages never carry the API key:
the gateway builds them from the operation name and Connect's error body, and redacts the key
from the latter in case a server ever echoes it back.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "MarketplaceError",
    "TransientError",
    "Stopping",
    "NotPending",
    "ActionRefused",
    "NotFound",
    "Unauthorized",
]


class MarketplaceError(Exception):
    """Base of every error the gateway raises."""


class TransientError(MarketplaceError):
    """Connect could not be reached or asked us to wait: nothing definite happened (or it is
    unknown).

    ``retry_after`` is the wait in seconds Connect asked for (429 ``Retry-After``), or None.
    ``cause`` is the retry cause of the last attempt (``connection``, ``timeout``,
    ``server_error``, ``bad_response``, ``throttled``).
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.cause = cause


class PageRefused(MarketplaceError):
    """A listing page whose answer the boundary refused (a NaN, a duplicate key, too deep or too
    large): not weather, so not retried with backoff; the pager asks for smaller pages instead,
    down to the one row that is refused (:mod:`processor.marketplace.paging`). ``body`` is the
    refused answer when it was read whole (a size refusal keeps none)."""

    def __init__(self, message: str, *, body: bytes | None = None) -> None:
        super().__init__(message)
        self.body = body


class Stopping(TransientError):
    """The process is shutting down: a retry that would have waited was not made. Nothing definite
    happened to the request; the journal holds it for the next start."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation}: not retried, the processor is shutting down", cause="shutdown"
        )


class NotPending(MarketplaceError):
    """The request is not (or no longer) in the status the action needs; ``status`` is where it
    is."""

    def __init__(self, status: str, request_id: str | None = None) -> None:
        where = f"request {request_id} is" if request_id else "the request is"
        super().__init__(f"{where} {status or 'in an unknown status'}")
        self.status = status
        self.request_id = request_id


class ActionRefused(MarketplaceError):
    """Connect answered a definite 4xx (other than 401/404) that retrying cannot change."""

    def __init__(
        self,
        status_code: int | None,
        error_code: str | None,
        errors: Iterable[str] = (),
        *,
        operation: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.errors = tuple(str(e) for e in errors)
        self.operation = operation
        head = f"{operation}: " if operation else ""
        code = f" {error_code}" if error_code else ""
        detail = f": {'; '.join(self.errors)}" if self.errors else ""
        super().__init__(f"{head}refused by Connect (HTTP {status_code}{code}){detail}")


class NotFound(MarketplaceError):
    """The object does not exist (or is not visible to this API key)."""


class Unauthorized(MarketplaceError):
    """Connect rejected the API key (HTTP 401). The message never contains the key."""
