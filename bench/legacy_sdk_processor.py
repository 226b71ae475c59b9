"""The legacy way: approve pending cancel requests with ``connect-sdk`` 22.0's
FulfillmentAutomation.

This is the baseline the processor is compared with, written as a vendor did it in 2019-2020:
subclass ``connect.FulfillmentAutomation``, skip what is not a cancel, return an
``ActivationTemplateResponse`` to approve, call ``process()``. It runs in its own virtualenv
(connect-sdk pins requests 2.21 and six 1.12) and imports nothing from this project.

Usage (secrets preferably from the environment, since command lines are visible to other users)::

    CONNECT_API_KEY='ApiKey SU-...:...' python legacy_sdk_processor.py \\
        --endpoint http://127.0.0.1:8181/public/v1 --product PRD-1 --template-id TL-1

Options and their environment variables: ``--endpoint`` (CONNECT_ENDPOINT), ``--api-key``
(CONNECT_API_KEY), ``--product``, repeatable (LEGACY_PRODUCTS, comma-separated),
``--template-id``, repeatable (LEGACY_TEMPLATE_ID, comma-separated). Templates belong to a product,
so with several products give one per product as ``PRD-...=TL-...``; a bare ``TL-...`` serves every
product without its own. A cancel whose product has no template is skipped (``no_template``).

Prints one JSON object on stdout: ``listed`` (requests the SDK read), ``cancels``, ``approved``,
``approve_failed`` (the SDK swallows the error and carries on, so it is counted here),
``no_template``, ``skipped`` (not a cancel), ``other_products``, ``elapsed_seconds`` and
``approved_per_second``. The SDK logs to stdout; that handler is moved to stderr so stdout stays
parseable.

Limits of the SDK itself, kept as they are because they are what is being measured: one page of
at most 1000 requests per ``process()`` (no paging), one thread, no retries, a conversation lookup
per request, and any exception while listing ends the whole run (exit status 2 here).
Exit status: 0 when every listed cancel was approved, 1 when some were not, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

COUNTS = (
    "listed",
    "cancels",
    "approved",
    "approve_failed",
    "no_template",
    "skipped",
    "other_products",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Approve pending cancels with connect-sdk 22.0.")
    parser.add_argument(
        "--endpoint",
        default=env.get("CONNECT_ENDPOINT"),
        help="Connect API base URL, e.g. .../public/v1 (env CONNECT_ENDPOINT)",
    )
    parser.add_argument(
        "--api-key",
        default=env.get("CONNECT_API_KEY"),
        help="'ApiKey SU-...:...' (env CONNECT_API_KEY, preferred)",
    )
    parser.add_argument(
        "--product",
        action="append",
        default=[],
        help="product id, repeatable (env LEGACY_PRODUCTS, comma-separated)",
    )
    parser.add_argument(
        "--template-id",
        action="append",
        default=[],
        help="approve template: TL-... for all products or PRD-...=TL-... for one, "
        "repeatable (env LEGACY_TEMPLATE_ID, comma-separated)",
    )
    args = parser.parse_args(argv)
    args.product = args.product or _split(env.get("LEGACY_PRODUCTS", ""))
    args.template_id = args.template_id or _split(env.get("LEGACY_TEMPLATE_ID", ""))
    missing = [
        name
        for name in ("endpoint", "api_key", "product", "template_id")
        if not getattr(args, name)
    ]
    if missing:
        parser.error("missing: " + ", ".join(missing))
    try:
        args.templates = templates_by_product(args.template_id)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def templates_by_product(specs: Sequence[str]) -> dict[str | None, str]:
    """``["PRD-1=TL-1", "TL-9"]`` -> ``{"PRD-1": "TL-1", None: "TL-9"}`` (None: any other
    product)."""
    templates: dict[str | None, str] = {}
    for spec in specs:
        product, _, template = spec.rpartition("=")
        key = product.strip() or None
        if not template.strip() or key in templates:
            raise ValueError(f"bad or repeated --template-id {spec!r}")
        templates[key] = template.strip()
    return templates


def build_automation(
    endpoint: str, api_key: str, products: list[str], templates: dict[str | None, str]
) -> Any:
    # Imported here so that --help works without the SDK installed. Its deprecation warnings
    # (marshmallow 2, its own old import paths) say nothing about the run.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings("ignore", module=r"marshmallow\.")
    import connect
    from connect.config import Config
    from connect.exceptions import SkipRequest
    from connect.models.activation_template_response import ActivationTemplateResponse

    class CancelApprover(connect.FulfillmentAutomation):
        """Approves every pending cancel unchanged; skips every other request type."""

        def __init__(self, config: Config) -> None:
            super().__init__(config)
            self.counts: Counter = Counter()
            self._approving: str | None = None

        def process_request(self, request: Any) -> Any:
            if request.type != "cancel":
                self.counts["skipped"] += 1
                raise SkipRequest("Not a cancel request.")
            self.counts["cancels"] += 1
            template_id = templates.get(request.asset.product.id) or templates.get(None)
            if template_id is None:
                self.counts["no_template"] += 1
                raise SkipRequest("No approve template configured for this product.")
            self._approving = request.id
            return ActivationTemplateResponse(template_id)

        def dispatch(self, request: Any) -> Any:
            # The SDK logs and swallows a failed approve (returning ''), so the outcome is read
            # from what dispatch returns: the approve call's response body when it worked.
            self.counts["listed"] += 1
            self._approving = None
            result = super().dispatch(request)
            if result == "Invalid product":
                self.counts["other_products"] += 1
            elif self._approving == request.id:
                self.counts["approved" if result else "approve_failed"] += 1
            return result

    return CancelApprover(Config(api_url=endpoint, api_key=api_key, products=products))


def _logs_to_stderr() -> None:
    """connect.logger configures the root logger to print on stdout; keep stdout for the summary."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    automation = build_automation(args.endpoint, args.api_key, args.product, args.templates)
    _logs_to_stderr()
    started = time.monotonic()
    error = None
    try:
        automation.process()
    except Exception as exc:  # noqa: BLE001 - the SDK ends the run on any error while listing
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
    elapsed = time.monotonic() - started
    counts = automation.counts
    summary: dict[str, Any] = {
        "sdk": "connect-sdk " + _sdk_version(),
        "products": list(args.product),
        **{name: counts[name] for name in COUNTS},
        "elapsed_seconds": round(elapsed, 4),
        "approved_per_second": round(counts["approved"] / elapsed, 2) if elapsed > 0 else None,
    }
    if error is not None:
        summary["error"] = error
    return summary


def _sdk_version() -> str:
    try:
        from importlib.metadata import version

        return version("connect-sdk")
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    summary = run(parse_args(argv))
    print(json.dumps(summary, sort_keys=True))
    if "error" in summary:
        return 2
    return 0 if summary["approved"] == summary["cancels"] else 1


if __name__ == "__main__":
    sys.exit(main())
