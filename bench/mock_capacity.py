"""Mock marketplace capacity: list pages per second and approve calls per second.

Starts ``python -m processor mock-marketplace`` in a subprocess (uvicorn, with uvloop and
httptools when installed, no access log: the production settings), generating N pending cancels,
then measures from a separate client process (multiprocessing, spawn) with a few threads, each
holding its own keep-alive connection. The client uses ``http.client`` and does not parse the
bodies it reads, so what is measured is the server, not the client:

1. ``list``: the processor's hot keyset query (``and(eq(type,cancel),eq(status,pending),
   ge(created,..),out(id,(..)),in(asset.product.id,(..)))&ordering(created,id)&limit=100`` with
   ``select(-activation_key,-template)``) from varying cursors, for --seconds;
2. ``approve``: ``POST /requests/{id}/approve`` with each product's fulfillment template, over the
   pending requests, until all are approved or --seconds pass; every answer must be 200.

    python bench/mock_capacity.py [--requests 20000] [--threads 4] [--seconds 5]

The machine's cores are shared by server and client; compare numbers on one machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API_KEY = "ApiKey SU-000-000-000:bench-secret"
PAGE = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, requests: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOCK_CONNECT_API_KEY": API_KEY}
    command = [
        sys.executable,
        "-m",
        "processor",
        "mock-marketplace",
        "--port",
        str(port),
        "--generate",
        str(requests),
        "--seed",
        "11",
    ]
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"server exited: {server.stderr.read().decode() if server.stderr else ''}"
            )
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start in time")


class Api:
    """One keep-alive connection; bodies read, not parsed, unless asked."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": API_KEY, "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, float]:
        payload = None if body is None else json.dumps(body)
        started = time.perf_counter()
        self.connection.request(method, "/public/v1" + path, body=payload, headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started


def hot_query(cursor: str, seen: list[str], products: list[str]) -> str:
    rql = (
        f"and(eq(type,cancel),eq(status,pending),ge(created,{cursor}),out(id,({','.join(seen)})),"
        f"in(asset.product.id,({','.join(products)})))"
    )
    return (
        "/requests?"
        + urllib.parse.quote(
            f"select(-activation_key,-template)&{rql}&ordering(created,id)", safe="(),&=:+*-."
        )
        + f"&limit={PAGE}"
    )


def inventory(port: int) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """(id, product, created) of every pending cancel, and each product's approve template."""
    api = Api(port)
    pending: list[tuple[str, str, str]] = []
    offset = 0
    while True:
        status, data, _ = api.call(
            "GET",
            "/requests?and(eq(type,cancel),eq(status,pending))"
            f"&select(-activation_key,-template)&ordering(created,id)&limit=1000&offset={offset}",
        )
        assert status == 200, data[:200]
        page = json.loads(data)
        pending += [(r["id"], r["asset"]["product"]["id"], r["created"]) for r in page]
        offset += len(page)
        if len(page) < 1000:
            break
    templates = {}
    for product in sorted({p for _, p, _ in pending}):
        status, data, _ = api.call(
            "GET", f"/products/{product}/templates?and(eq(scope,asset),eq(type,fulfillment))"
        )
        templates[product] = json.loads(data)[0]["id"]
    return pending, templates


def run_threads(threads: int, work: Any) -> tuple[int, float, list[float]]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(latencies[n],)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [x for per in latencies for x in per]
    return len(flat), elapsed, flat


def client(port: int, threads: int, seconds: float, results: Any) -> None:
    pending, templates = inventory(port)
    products = sorted(templates)
    created = sorted({c for _, _, c in pending})
    errors: list[str] = []

    def list_pages(latencies: list[float]) -> None:
        api, rng = Api(port), random.Random(len(latencies))
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            seen = [rid for rid, _, _ in rng.sample(pending, 5)]
            status, data, took = api.call("GET", hot_query(rng.choice(created), seen, products))
            if status != 200:
                errors.append(f"list {status}")
            latencies.append(took)

    todo: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    for rid, product, _ in pending:
        todo.put((rid, templates[product]))

    def approve(latencies: list[float]) -> None:
        api = Api(port)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            try:
                rid, template = todo.get_nowait()
            except queue.Empty:
                return
            status, data, took = api.call(
                "POST", f"/requests/{rid}/approve", {"template_id": template}
            )
            if status != 200:
                errors.append(f"approve {status} {data[:120]!r}")
            latencies.append(took)

    results.put(
        {
            "pending": len(pending),
            "list": run_threads(threads, list_pages),
            "approve": run_threads(threads, approve),
            "errors": errors[:5],
            "error_count": len(errors),
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="pending cancels to generate")
    parser.add_argument(
        "--threads", type=int, default=4, help="client threads (one connection each)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    args = parser.parse_args()
    port = free_port()
    started = time.perf_counter()
    server = start_server(port, args.requests)
    print(
        f"server up with {args.requests} pending cancels in {time.perf_counter() - started:.1f} s "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)"
    )
    try:
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        worker = context.Process(target=client, args=(port, args.threads, args.seconds, results))
        worker.start()
        outcome = results.get(timeout=args.seconds * 4 + 600)
        worker.join(30)
    finally:
        server.terminate()
        server.wait(30)
    print(f"\n{'operation':<22}{'calls':>8}{'seconds':>9}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, label in (("list", f"list page ({PAGE})"), ("approve", "approve")):
        calls, elapsed, latencies = outcome[name]
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        print(
            f"{label:<22}{calls:>8}{elapsed:>9.2f}{calls / elapsed:>10.0f}"
            f"{q[49] * 1000:>9.2f}{q[98] * 1000:>9.2f}"
        )
    if outcome["error_count"]:
        print(f"\n{outcome['error_count']} unexpected answers, e.g. {outcome['errors']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
