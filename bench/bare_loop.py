"""The baseline the processor is measured against: the same HTTP calls, made bare.

Run as a child process by ``bench.as_users_run`` so its CPU is read the same way as the
processor's (``wait4`` on the child). It makes, call for call, what ``cancel-processor run --once``
makes for the same work (``bench.parity`` compares both sides' counts on the mocks and the
benchmark prints no ratio when they differ):

- at start, what ``run --once`` checks before any work: the pending count for the products, each
  product and its fulfillment template (``--products``), and the vendor probe (``--probe``);
- the pending cancels, page by page in (created, id) order, until the page that holds the whole
  total its ``Content-Range`` gives, or a short one (what is handled leaves the set, so offset 0 is
  always next; the processor's keyset pages make the same number of calls);
- for each request: terminate at the vendor, approve on Connect (the template looked up once per
  product) and, with ``--notes``, find the request's conversation and post a message, as the
  processor does with ``processing.notes: true`` on a first claim;
- at the end of the pass, the revoking cancels (the processor's pass lists those too), and the
  count of what is still pending (``run --once`` proves its pass complete with it).

No journal, no retries, no logging, no metrics.

``--client requests`` uses plain ``requests`` sessions (one per thread); ``--client openapi``
makes the Connect calls through connect-openapi-client (one client per thread), the vendor calls
still through ``requests``. It prints one JSON line: ``{"done": N, "seconds": S}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

__all__ = ["main"]

PAGE = 100


class _Connect:
    """The Connect calls of one worker thread, through the chosen client."""

    def __init__(self, endpoint: str, api_key: str, client: str) -> None:
        self.endpoint, self.auth = endpoint, {"Authorization": api_key}
        self.session = requests.Session()
        self.openapi = None
        if client == "openapi":
            from connect.client import ConnectClient

            self.openapi = ConnectClient(api_key, endpoint=endpoint, use_specs=False)

    def approve(self, request_id: str, template_id: str) -> None:
        payload = {"template_id": template_id}
        if self.openapi is not None:
            self.openapi.requests[request_id]("approve").post(payload=payload)
            return
        self.session.post(
            f"{self.endpoint}/requests/{request_id}/approve",
            json=payload,
            headers=self.auth,
            timeout=30,
        ).raise_for_status()

    def note(self, request_id: str, text: str) -> None:
        if self.openapi is not None:
            conversation = self.openapi.conversations.filter(instance_id=request_id).first()
            self.openapi.conversations[conversation["id"]].messages.create(payload={"text": text})
            return
        found = self.session.get(
            f"{self.endpoint}/conversations?eq(instance_id,{request_id})&limit=1",
            headers=self.auth,
            timeout=30,
        )
        conversation = found.json()[0]["id"]
        self.session.post(
            f"{self.endpoint}/conversations/{conversation}/messages",
            json={"text": text},
            headers=self.auth,
            timeout=30,
        ).raise_for_status()


def _subscription(request: dict[str, Any]) -> str:
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


def run(
    endpoint: str,
    api_key: str,
    vendor_url: str,
    vendor_token: str,
    concurrency: int,
    client: str,
    notes: bool,
    products: list[str] | None = None,
    probe: str | None = None,
) -> int:
    """Drain the pending cancels; the number handled. ``products``: check them first, and list
    only theirs; ``probe``: a vendor path read once at start."""
    products = products or []
    local = threading.local()
    lister = requests.Session()
    auth = {"Authorization": api_key}
    templates: dict[str, str] = {}

    def template(product_id: str) -> str:
        if product_id not in templates:  # one look-up per product, as the processor caches it
            reply = lister.get(
                f"{endpoint}/products/{product_id}/templates?eq(scope,asset)&eq(type,fulfillment)",
                headers=auth,
                timeout=30,
            )
            templates[product_id] = reply.json()[0]["id"]
        return templates[product_id]

    def worker() -> tuple[requests.Session, _Connect]:
        if not hasattr(local, "pair"):
            local.pair = (requests.Session(), _Connect(endpoint, api_key, client))
        return local.pair  # type: ignore[no-any-return]

    def one(request: dict[str, Any], template_id: str) -> None:
        vendor, connect = worker()
        reply = vendor.post(
            f"{vendor_url}/v1/subscriptions/{_subscription(request)}/terminate",
            json={"request_id": request["id"]},
            timeout=30,
            headers={
                "Authorization": f"Bearer {vendor_token}",
                "Idempotency-Key": f"bare-{request['id']}",
            },
        )
        reply.raise_for_status()
        connect.approve(request["id"], template_id)
        if notes:
            connect.note(request["id"], f"Cancelled: {request['id']}")

    def listing(status: str, limit: int) -> requests.Response:
        return lister.get(
            f"{endpoint}/requests?and(eq(type,cancel),eq(status,{status}){selected})"
            f"&ordering(created,id)&select(-activation_key,-template)&limit={limit}",
            headers=auth,
            timeout=60,
        )

    selected = f",in(asset.product.id,({','.join(products)}))" if products else ""
    if products:  # run --once's check: the count, each product and its template, the vendor
        listing("pending", 0).raise_for_status()
        for product_id in products:
            lister.get(
                f"{endpoint}/products/{product_id}", headers=auth, timeout=30
            ).raise_for_status()
            template(product_id)
        templates.clear()  # the check's gateway is not the run's: the run looks them up again
    if probe:
        lister.get(
            f"{vendor_url}{probe}", headers={"Authorization": f"Bearer {vendor_token}"}, timeout=30
        )
    # Every handled request leaves the pending set, so the first page is always the next one.
    done = 0
    with ThreadPoolExecutor(concurrency) as pool:
        while True:
            reply = listing("pending", PAGE)
            page = reply.json()
            jobs: list[Callable[[], None]] = []
            for request in page:
                tid = template(request["asset"]["product"]["id"])
                jobs.append(lambda r=request, t=tid: one(r, t))
            for future in [pool.submit(job) for job in jobs]:
                future.result()
            done += len(page)
            # The last page, as the processor's listing reads it: all the total (Content-Range),
            # else a short page.
            total = reply.headers.get("Content-Range", "").rpartition("/")[2]
            if len(page) < PAGE or (total.isdigit() and len(page) >= int(total)):
                listing("revoking", PAGE).raise_for_status()
                # run --once's proof of completeness: what is still pending, counted by Connect
                listing("pending", 0).raise_for_status()
                return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--vendor-url", required=True)
    parser.add_argument("--vendor-token", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--client", choices=["requests", "openapi"], default="requests")
    parser.add_argument("--notes", action="store_true")
    parser.add_argument("--products", default="", help="comma-separated product ids to check")
    parser.add_argument("--probe", help="a vendor path read once at start (the adapter's probe)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    done = run(
        args.endpoint,
        args.api_key,
        args.vendor_url,
        args.vendor_token,
        args.concurrency,
        args.client,
        args.notes,
        [p for p in args.products.split(",") if p],
        args.probe,
    )
    print(json.dumps({"done": done, "seconds": time.perf_counter() - t0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
