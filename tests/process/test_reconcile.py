"""``cancel-processor reconcile`` against the real mocks: a subscription re-activated at the vendor
behind the processor's back, one refused on Connect but terminated at the vendor anyway."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.reconcile import _Pace


def cli(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sandbox.environ()}
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def subscription(request: dict[str, Any]) -> str:
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


def test_reconcile_lists_what_the_vendor_changed_behind_our_back(tmp_path: Path) -> None:
    with Sandbox(generate=20, seed=21) as sandbox:
        data = sandbox.config_data(
            f"sqlite:///{tmp_path / 'journal.db'}", preview_noop=True, processing={"notes": False}
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        before = sandbox.pending_cancels()
        # From now: the mock's seeded history (a cancel approved days ago, whose subscription the
        # mock vendor never heard of) is Connect's side, tested below.
        since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
        done = cli(sandbox, "run", "--once", "-c", str(config))
        assert done.returncode == 0, done.stderr[-2000:]
        clean = cli(sandbox, "reconcile", "-c", str(config), "--since", since)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert " 0 divergent, 0 unreadable" in clean.stdout

        cancels = sandbox.cancel_requests()
        by_vendor = [
            r
            for r in cancels.values()
            if r["id"] in before and r["asset"]["connection"]["type"] != "preview"
        ]
        approved = sorted(
            (r for r in by_vendor if r["status"] == "approved"), key=lambda r: r["id"]
        )
        refused = sorted((r for r in by_vendor if r["status"] == "failed"), key=lambda r: r["id"])
        assert approved and refused
        back, ended = approved[0], refused[0]
        for request, status in ((back, "active"), (ended, "terminated")):
            requests.put(
                f"{sandbox.vendor.url}/admin/subscriptions/{subscription(request)}",
                json={"status": status},
                timeout=10,
            ).raise_for_status()

        table = cli(sandbox, "reconcile", "-c", str(config), "--since", since)
        assert table.returncode == 1, table.stdout + table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:5] == [
            "divergence",
            "request_id",
            "journal_state",
            "vendor_status",
            "subscription_id",
        ]
        rows = {line.split()[1]: line.split() for line in lines[1:-1]}
        assert len(rows) == 2, table.stdout
        assert rows[back["id"]][:5] == [
            "approved_but_active",
            back["id"],
            "approved",
            "active",
            subscription(back),
        ]
        assert rows[ended["id"]][:5] == [
            "refused_but_terminated",
            ended["id"],
            "failed",
            "terminated",
            subscription(ended),
        ]
        assert "2 divergent" in lines[-1]

        as_json = json.loads(
            cli(
                sandbox, "reconcile", "-c", str(config), "--since", since, "--format", "json"
            ).stdout
        )
        assert (
            as_json["status"] == 1 and as_json["skipped"] >= 1
        )  # preview requests: noop, no status read
        assert {d["request_id"]: d["divergence"] for d in as_json["divergences"]} == {
            back["id"]: "approved_but_active",
            ended["id"]: "refused_but_terminated",
        }
        assert as_json["checked"] == len(by_vendor)
        as_csv = list(
            csv.DictReader(
                io.StringIO(
                    cli(
                        sandbox, "reconcile", "-c", str(config), "--since", since, "--format", "csv"
                    ).stdout
                )
            )
        )
        assert sorted(r["request_id"] for r in as_csv) == sorted([back["id"], ended["id"]])

        # The range is by the journal's last change: nothing changed after now.
        later = cli(sandbox, "reconcile", "-c", str(config), "--since", "2999-01-01")
        assert later.returncode == 0 and " 0 checked" in later.stdout


def test_the_pace_spaces_calls_across_threads() -> None:
    pace, stamps, lock = _Pace(rate=50.0), [], threading.Lock()

    def call() -> None:
        for _ in range(5):
            pace.wait()
            with lock:
                stamps.append(__import__("time").monotonic())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    stamps.sort()
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # 20 calls at 50/s take at least 19 gaps of 20 ms (small slack for clock resolution)
    assert len(stamps) == 20 and stamps[-1] - stamps[0] >= 19 * 0.02 * 0.95, gaps


def test_reconcile_lists_what_others_did_on_connect_each_once(tmp_path: Path) -> None:
    """Divergences made on Connect, each reported once: approved there by someone else while the
    vendor still has the subscription (a request the journal never saw, and one it settled as
    closed), failed there while the vendor ended it, pending and never seen by the journal, and
    a subscription the vendor ended whose Connect asset is active again (a revoked cancel)."""
    from processor.journal import open_journal
    from processor.journal.base import State

    with Sandbox(generate=20, seed=21) as sandbox:
        url = f"sqlite:///{tmp_path / 'journal.db'}"
        data = sandbox.config_data(url, preview_noop=True, processing={"notes": False})
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
        cancels = sandbox.cancel_requests()
        mine = sorted(
            (
                r
                for r in cancels.values()
                if r["status"] == "pending"
                and r["asset"]["connection"]["type"] != "preview"
                and not subscription(r).endswith("7")  # the mock vendor refuses those
            ),
            key=lambda r: r["id"],
        )
        a, b, c, e = mine[:4]
        templates = sandbox.product_templates

        def vendor(request: dict[str, Any], status: str) -> None:
            requests.put(
                f"{sandbox.vendor.url}/admin/subscriptions/{subscription(request)}",
                json={"status": status},
                timeout=10,
            ).raise_for_status()

        for approved in (a, c):  # approved on Connect by a person; the vendor never told
            sandbox.act(
                approved["id"],
                "approve",
                {"template_id": templates[approved["asset"]["product"]["id"]]},
            )
        sandbox.act(b["id"], "fail", {"reason": "refused by a person"})
        vendor(b, "terminated")  # ... while someone ended it at the vendor
        planned = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        sandbox.act(e["id"], "schedule", {"planned_date": planned})
        sandbox.act(e["id"], "revoke", {"reason": "customer changed their mind"})
        sandbox.act(e["id"], "confirm")
        vendor(e, "terminated")  # ended at the vendor all the same
        journal = open_journal(url)  # c: the journal saw it and settled it as closed
        try:
            journal.migrate()
            journal.ensure(
                c["id"], idempotency_key=f"cancel-{c['id']}", subscription_id=subscription(c)
            )
            journal.force(
                c["id"], State.CLOSED, detail="approved on Connect by a person", actor="t"
            )
        finally:
            journal.close()

        done = cli(sandbox, "run", "--once", "-c", str(config))
        assert done.returncode == 0, done.stderr[-2000:]
        refused = next(
            r
            for r in sandbox.cancel_requests().values()
            if r["status"] == "failed"
            and r["id"] != b["id"]
            and r["asset"]["status"] == "active"
            and r["asset"]["connection"]["type"] != "preview"
        )
        d = requests.post(  # a new cancel, after the last pass: the journal never sees it
            f"{sandbox.endpoint}/requests",
            json={"type": "cancel", "asset": {"id": refused["asset"]["id"]}},
            headers={"Authorization": sandbox.api_key},
            timeout=10,
        ).json()

        args = ("reconcile", "-c", str(config), "--since", since)
        ran = cli(sandbox, *args, "--pending-grace", "0", "--format", "json")
        assert ran.returncode == 1, ran.stdout + ran.stderr
        report = json.loads(ran.stdout)
        found = [(row["request_id"], row["divergence"]) for row in report["divergences"]]
        assert sorted(found) == sorted(
            [
                (a["id"], "approved_on_connect_but_active"),
                (b["id"], "failed_on_connect_but_terminated"),
                (c["id"], "approved_on_connect_but_active"),
                (d["id"], "pending_not_in_journal"),
                (e["id"], "terminated_but_asset_active"),
            ]
        ), report
        rows = {row["request_id"]: row for row in report["divergences"]}
        assert rows[a["id"]]["journal_state"] == "unseen"
        assert rows[c["id"]]["journal_state"] == "closed"
        assert (rows[e["id"]]["connect_status"], rows[e["id"]]["vendor_status"]) == (
            "revoked",
            "terminated",
        )
        assert report["unreadable"] == [] and report["connect_error"] is None

        as_csv = list(
            csv.DictReader(
                io.StringIO(cli(sandbox, *args, "--pending-grace", "0", "--format", "csv").stdout)
            )
        )
        assert sorted((r["request_id"], r["divergence"]) for r in as_csv) == sorted(found)
        table = cli(sandbox, *args)  # the default grace: the new request is minutes too young
        assert table.returncode == 1 and "4 divergent" in table.stdout, table.stdout
        assert d["id"] not in table.stdout
