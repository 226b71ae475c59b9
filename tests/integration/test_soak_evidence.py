"""A failed soak keeps its evidence: both ledgers, the journal's story of every offending request,
and a printed timeline per request that shows the second termination for what it is."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from bench.checker import RunFacts, check
from bench.evidence import keep_evidence
from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, Sandbox
from processor.journal import open_journal
from processor.journal.base import State


def test_evidence_of_a_duplicate_termination(tmp_path: Path) -> None:
    journal_url = f"sqlite:///{tmp_path / 'journal.db'}"
    journal = open_journal(journal_url)
    journal.migrate()
    with Sandbox(generate=3, seed=3, vendor_mode="read", refuse_pattern="^$") as sandbox:
        seeded = sorted(sandbox.pending_cancels())
        twice = seeded[0]
        cancels = sandbox.cancel_requests()
        sub = next(
            p["value"] for p in cancels[twice]["asset"]["params"] if p["id"] == "subscription_id"
        )
        # The journal's side of the story: a worker recorded its intent, then another took over.
        journal.ensure(twice, idempotency_key=f"cancel-{twice}", subscription_id=sub)
        first = journal.claim(twice, "host:101:aaaa", 30)
        assert first is not None
        journal.transition(first, State.TERMINATING, detail="intent: terminate via vendor")
        journal.close()
        for key in (
            "k-1",
            "k-2",
        ):  # two terminations of one subscription: the second is a duplicate
            reply = requests.post(
                f"{sandbox.vendor.url}/v1/subscriptions/{sub}/terminate",
                headers={"Authorization": f"Bearer {SANDBOX_VENDOR_TOKEN}", "Idempotency-Key": key},
                json={"request_id": twice},
                timeout=10,
            )
            assert reply.status_code == 200
        product = cancels[twice]["asset"]["product"]["id"]
        sandbox.act(twice, "approve", {"template_id": sandbox.product_templates[product]})
        report = check(
            sandbox,
            journal_url,
            set(seeded),
            RunFacts(seed=3, store="sqlite", mode="read", command="t"),
        )
        assert not report.ok and twice in report.details["offenders"]
        lines: list[str] = []
        folder = keep_evidence(sandbox, journal_url, report, tmp_path, lines.append)

    vendor = json.loads((folder / "vendor-ledger.json").read_text(encoding="utf-8"))
    assert [e["duplicate"] for e in vendor["effects"] if e["subscription_id"] == sub] == [
        False,
        True,
    ]
    market = json.loads((folder / "marketplace-ledger.json").read_text(encoding="utf-8"))
    assert any(e.get("id") == twice and e.get("to") == "approved" for e in market)
    story = json.loads((folder / "offenders.json").read_text(encoding="utf-8"))[twice]
    assert [t["to_state"] for t in story["transitions"]] == ["terminating"]
    assert [e["to"] for e in story["connect"]] == ["approved"]
    assert story["record"]["state"] == "terminating" and story["subscription"] == sub
    printed = "\n".join(lines)
    start = printed.index(f"{twice} (subscription {sub})")
    timeline = printed[start:].splitlines()
    # In time order: the journal's intent, then the two calls and their effects, the second flagged.
    assert "journal  new -> terminating fence 1 by host:101:aaaa" in timeline[1]
    assert sum("DUPLICATE" in line for line in timeline) == 1
    assert sorted(line.split()[2] for line in timeline[2:6]) == ["call", "call", "effect", "effect"]
    effects = [line for line in timeline if " effect " in line]
    assert "DUPLICATE" not in effects[0] and "DUPLICATE" in effects[1]
    assert "connect  pending -> approved" in timeline[6]
