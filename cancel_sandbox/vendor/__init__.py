"""A local vendor subscription API for development, demos, tests and benchmarks.

It plays the vendor's side of a cancellation: ``terminate``, ``suspend`` and ``purge`` a
subscription, and (in most modes) read its status. Its point is to make the processor's
retry safety *measurable*: the mode decides what a repeated call does (``key``: Stripe-like
Idempotency-Key replay; ``natural``: 409 ``already_terminated``; ``read``: acts again, but a status
read tells the truth; ``none``: acts again, no status read), and the ledger at ``/admin/ledger``
separates raw calls from effective changes, so a duplicate termination is counted, not guessed.

Limits: one process, one tenant, state in memory unless ``state_file`` is set; ledger and keys grow
without bound (fine for 10^5 requests). The HTTP contract is described in :mod:`.app`.
"""

from cancel_sandbox.vendor.app import VendorApp, create_app
from cancel_sandbox.vendor.settings import DEFAULT_TOKEN, VendorSettings
from cancel_sandbox.vendor.state import Mode

__all__ = ["DEFAULT_TOKEN", "Mode", "VendorApp", "VendorSettings", "create_app"]
