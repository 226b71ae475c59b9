"""What the processor asks of Connect, as a protocol: the seam between a request's life and Connect.

The engine and the daemon (run by the CLI, the ops commands and the EaaS tasks) call these
operations and nothing else on the object they are given; the preflight checks and the terminal's
retry ticker use the real gateway (its client, its retry state).
:class:`processor.marketplace.gateway.ConnectGateway` is the real one; the unit tests' in-memory
Connect implements the same protocol, and mypy checks both against it
(tests/unit/test_code_habits.py).

Every operation may raise a :class:`~processor.marketplace.errors.MarketplaceError`: a
:class:`~processor.marketplace.errors.TransientError` when it may be tried again,
:class:`~processor.marketplace.errors.NotPending` when an action meets a request that has moved on,
:class:`~processor.marketplace.errors.NotFound` when the object is not visible.

Left out on purpose: ``stop_on`` (the daemon calls it only when the gateway has it, so fakes need
not), ``waiting`` (the terminal's view of the real gateway's retries) and ``update_params`` (no
caller in the processor).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from processor.marketplace.settings import Selector

__all__ = ["Marketplace"]


class Marketplace(Protocol):
    """Connect's cancel requests, as the processor reads and acts on them."""

    # -- reading -------------------------------------------------------------------------------

    def iter_pending(self, selector: Selector) -> Iterator[dict[str, Any]]:
        """Every cancel request pending at the start of the pass, each once."""
        ...

    def iter_cancels(self, selector: Selector, status: str) -> Iterator[dict[str, Any]]:
        """Every cancel request in ``status`` (``revoking``, to confirm revocations), each once."""
        ...

    def count_pending(self, selector: Selector) -> int:
        """How many cancel requests the selector matches now."""
        ...

    def count_unaccounted(
        self, selector: Selector, accounted: Iterable[str], *, names: int = 10
    ) -> tuple[int, list[str]]:
        """How many cancels the selector matches pending now (counted by Connect) whose id is not
        in ``accounted``, and up to ``names`` of their ids: a pass's completeness check."""
        ...

    def get_request(self, request_id: str) -> dict[str, Any]:
        """The request as Connect holds it now (timers re-read it before acting)."""
        ...

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        """The subscription (its ``billing.next_date`` when the request's copy lacks it)."""
        ...

    def default_template(self, product_id: str) -> str | None:
        """The product's asset fulfillment template, when the configuration names none."""
        ...

    # -- actions on a request ------------------------------------------------------------------

    def approve(
        self,
        request_id: str,
        template_id: str,
        *,
        effective_date: datetime | None = None,
        first_attempt: bool = False,
    ) -> dict[str, Any]:
        """Approve; ``effective_date`` (timezone-aware) when the cancellation took effect before.
        ``first_attempt``: no earlier approve of ours can have landed, so a request approved
        already raises :class:`NotPending` ``approved`` (someone else approved it)."""
        ...

    def fail(self, request_id: str, reason: str) -> dict[str, Any]:
        """Fail with a reason the customer reads."""
        ...

    def schedule(self, request_id: str, planned_date: datetime) -> dict[str, Any]:
        """Schedule for ``planned_date`` (timezone-aware)."""
        ...

    def confirm(self, request_id: str) -> dict[str, Any]:
        """Confirm a revocation (``revoking`` -> ``revoked``)."""
        ...

    def assign(
        self, request_id: str, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """Give the request to a human agent: exactly one of ``email`` and ``user_id``."""
        ...

    # -- notes and resources -------------------------------------------------------------------

    def post_note(
        self,
        request_id: str,
        text: str,
        *,
        once_key: str | None = None,
        first_attempt: bool = False,
    ) -> bool:
        """Post to the request's conversation; False when ``once_key``'s note is already there.
        ``first_attempt``: no earlier attempt of this note can have reached Connect, so the
        conversation is not read for it before the post."""
        ...

    def close(self) -> None:
        """Release what the gateway holds (its HTTP session)."""
        ...
