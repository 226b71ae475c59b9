"""Run inside connect-devops-testing-library's own virtualenv (see tests/devops_env.py).

Creates a cancel of an active subscription with the library's Builder (from a request of that
subscription, as served by the API) and Dispatcher (``use_specs=False``), updates its
fulfillment parameter through the Dispatcher, and waits with ``provision_request`` while a
stand-in processor thread approves it. Prints one JSON summary.
The API key comes from ``CONNECT_API_KEY``, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from connect.client import ConnectClient
from connect.devops_testing import fixtures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--request-file", required=True)  # a request of the subscription
    parser.add_argument("--param", required=True)
    parser.add_argument("--template", required=True)
    args = parser.parse_args()
    key = os.environ["CONNECT_API_KEY"]
    dispatcher = fixtures.make_request_dispatcher(
        api_key=key, api_url=args.endpoint, use_specs=False
    )
    # As a vendor would: start from a real request of the subscription, make it a cancel.
    builder = fixtures.make_request_builder(args.request_file)

    def cancel(value: str, request_id: str | None = None) -> dict:
        made = (
            builder.with_type("cancel").with_status("pending").with_asset_param(args.param, value)
        )
        return made.with_id(request_id).build() if request_id else made.without("id").build()

    created = dispatcher.provision_request(cancel("SUB-DEVOPS-1"), timeout=0, max_attempt=0)
    updated = dispatcher.provision_request(
        cancel("SUB-DEVOPS-2", created["id"]), timeout=0, max_attempt=0
    )

    processor = ConnectClient(key, endpoint=args.endpoint, use_specs=False)
    approvals: list[dict] = []

    def approve_later() -> None:  # a processor that answers while the dispatcher waits
        time.sleep(0.3)
        approvals.append(
            processor.requests[created["id"]]("approve").post(
                payload={"template_id": args.template}
            )
        )

    worker = threading.Thread(target=approve_later)
    worker.start()
    approved = dispatcher.provision_request(
        cancel("SUB-DEVOPS-2", created["id"]), timeout=0.1, max_attempt=50
    )
    worker.join(10)
    params = {p["id"]: p["value"] for p in approved["asset"]["params"]}
    print(
        json.dumps(
            {
                "created": {
                    "id": created["id"],
                    "status": created["status"],
                    "type": created["type"],
                },
                "updated": {
                    "status": updated["status"],
                    "value": {p["id"]: p["value"] for p in updated["asset"]["params"]}[args.param],
                },
                "approved": {
                    "status": approved["status"],
                    "value": params[args.param],
                    "activation_key": approved["activation_key"],
                },
                "approvals": len(approvals),
            }
        )
    )


if __name__ == "__main__":
    main()
