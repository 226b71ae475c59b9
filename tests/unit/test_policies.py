"""Policies on fakes (an in-memory Connect, a scripted vendor) and a real SQLite journal: rule
matching, reasons, routing and release, grace and retention edge cases, batches, the dry-run
plan."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processor.adapters.base import (
    Ambiguous,
    Idempotency,
    Refused,
    SubscriptionStatus,
    Terminated,
)
from processor.config.schema import Config, load_config
from processor.engine.core import Engine
from processor.journal.base import Journal, State
from processor.observe import Metrics
from processor.policy.rules import Policy
from processor.states import TIMER_STATES

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from ..policy_fakes import PolicyMarketplace, StepAdapter

PRODUCT = "PRD-100-100-100"
DAY = 86400.0


def config(
    policies: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    default: str | None = None,
) -> Config:
    return load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor", **({"policy": default} if default else {})},
            "products": {PRODUCT: {"template": "TL-100-100-100"}, "PRD-200-200-200": {}},
            "policies": policies or {},
            "rules": rules or [],
            "processing": {"retry_base": 10, "retry_max": 60, "max_attempts": 3},
            "guard": {"hold": 0},  # refusals reach Connect at once here; the hold has its tests
        }
    )


def engine_for(
    journal: Journal, adapter: ScriptedAdapter, market: FakeMarketplace, clock: Clock, cfg: Config
) -> Engine:
    return Engine(
        config=cfg,
        journal=journal,
        marketplace=market,
        adapters={"vendor": adapter},  # type: ignore[arg-type]
        owner="worker-1",
        metrics=Metrics(),
        clock=clock,
    )


def with_params(payload: dict[str, Any], **values: str) -> dict[str, Any]:
    for name, value in values.items():
        payload["asset"]["params"].append({"id": name, "value": value})
    return payload


def fire_timers(engine: Engine) -> list[str]:
    return [
        engine.resume(c) for c in engine.journal.claim_due("timers", 30, 10, states=TIMER_STATES)
    ]


# -- choosing a policy -----------------------------------------------------------------------------


def test_the_first_matching_rule_picks_the_policy_and_unmatched_requests_get_the_fallback() -> None:
    from processor.model import parse_request

    cfg = config(
        policies={
            "premium": {"route_to": {"email": "csm@x.example"}},
            "test_env": {},
            "eu": {},
            "closing": {},
            "monthly": {},
        },
        rules=[
            {"match": {"mpn": "PLAN-PREMIUM"}, "policy": "premium"},
            {"match": {"environment": "test", "product": PRODUCT}, "policy": "test_env"},
            {"match": {"marketplace": ["MP-EU"], "customer": "TA-0000-0000-0009"}, "policy": "eu"},
            {
                "match": {"params": {"cancellation_reason": ["company_closing", ""]}},
                "policy": "closing",
            },
        ],
        default="monthly",
    )
    policy = Policy(cfg)

    def chosen(payload: dict[str, Any]) -> str:
        return policy.select(parse_request(payload))[0]

    premium = cancel_payload(1)
    premium["asset"]["items"].append({"id": "X-2", "mpn": "PLAN-PREMIUM", "quantity": "1"})
    no_longer_premium = cancel_payload(2)
    no_longer_premium["asset"]["items"].append(
        {"id": "X-2", "mpn": "PLAN-PREMIUM", "quantity": "0"}
    )
    eu = cancel_payload(3, customer="TA-0000-0000-0009")
    eu["marketplace"]["id"] = "MP-EU"
    assert chosen(premium) == "premium"
    assert chosen(with_params(no_longer_premium, cancellation_reason="too_expensive")) == "monthly"
    assert chosen(cancel_payload(4, environment="test")) == "test_env"
    assert chosen(with_params(eu, cancellation_reason="x")) == "eu"
    assert chosen(cancel_payload(5)) == "closing"  # no reason given matches ""
    assert (
        chosen(with_params(cancel_payload(6), cancellation_reason="company_closing")) == "closing"
    )
    assert Policy(config()).select(parse_request(cancel_payload(7)))[0] == "default"


def test_the_reason_code_and_comment_reach_the_vendor(journal: Journal, clock: Clock) -> None:
    payload = with_params(
        cancel_payload(1), cancellation_reason="too_expensive", cancellation_comment="Budget cuts."
    )
    market, adapter = PolicyMarketplace([payload]), StepAdapter()
    assert engine_for(journal, adapter, market, clock, config()).handle(payload) == "approved"
    [call] = adapter.terminate_calls()
    assert (call.reason_code, call.reason_comment) == ("too_expensive", "Budget cuts.")


@pytest.mark.parametrize(
    ("on_missing", "result"), [("park", "parked"), ("refuse", "failed"), ("proceed", "approved")]
)
def test_a_missing_required_reason_follows_the_policy(
    journal: Journal, clock: Clock, on_missing: str, result: str
) -> None:
    payload = cancel_payload(2)
    market, adapter = PolicyMarketplace([payload]), StepAdapter()
    cfg = config(
        {
            "strict": {
                "require_reason": {"on_missing": on_missing, "reason": "Please give a reason."}
            }
        },
        default="strict",
    )
    assert engine_for(journal, adapter, market, clock, cfg).handle(payload) == result
    assert len(adapter.terminate_calls()) == (1 if on_missing == "proceed" else 0)
    assert market.failed == (
        [(payload["id"], "Please give a reason.")] if on_missing == "refuse" else []
    )


def test_a_routed_request_waits_until_a_person_releases_it(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(3)
    market, adapter = PolicyMarketplace([payload]), StepAdapter()
    cfg = config(
        {
            "premium": {
                "route_to": {"user_id": "UR-123-456", "note": "A CSM handles premium plans."}
            }
        },
        default="premium",
    )
    engine = engine_for(journal, adapter, market, clock, cfg)
    assert [engine.handle(payload) for _ in range(3)] == ["waiting_human"] * 3
    assert market.assigned == [(payload["id"], None, "UR-123-456")]
    assert market.notes == [(payload["id"], "A CSM handles premium plans.")] and adapter.calls == []

    journal.force(
        payload["id"], State.NEW, detail="retry by cli:csm", actor="cli:csm"
    )  # `cancel-processor retry`
    assert engine.handle(payload) == "approved"
    assert len(market.assigned) == 1 and len(adapter.terminate_calls()) == 1


def test_an_adapter_without_the_steps_a_policy_needs_parks_before_anything_happens(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(4)
    market, adapter = PolicyMarketplace([payload]), ScriptedAdapter()  # terminate only
    cfg = config({"graceful": {"grace_days": 7}}, default="graceful")
    assert engine_for(journal, adapter, market, clock, cfg).handle(payload) == "parked"
    assert "has no suspend()" in (journal.get(payload["id"]).reason or "")  # type: ignore[union-attr]
    assert adapter.calls == [] and market.approved == []


# -- dates -----------------------------------------------------------------------------------------


def test_without_a_billing_date_the_subscription_is_asked_then_the_fallback_applies(
    journal: Journal, clock: Clock
) -> None:
    asked, fallback, parked = cancel_payload(5), cancel_payload(6), cancel_payload(7)
    market, adapter = PolicyMarketplace([asked, fallback, parked]), StepAdapter()
    market.assets[asked["asset"]["id"]] = {
        "id": asked["asset"]["id"],
        "billing": {"next_date": "2026-11-20T00:00:00+00:00"},
    }
    cfg = config(
        {
            "monthly": {"timing": "end_of_period"},
            "strict": {"timing": "end_of_period", "no_billing_date": "park"},
        },
        rules=[{"match": {"customer": "TA-0000-0000-0007"}, "policy": "strict"}],
        default="monthly",
    )
    parked["asset"]["tiers"]["customer"]["id"] = "TA-0000-0000-0007"
    engine = engine_for(journal, adapter, market, clock, cfg)
    assert [engine.handle(p) for p in (asked, fallback, parked)] == [
        "scheduled",
        "scheduled",
        "parked",
    ]
    assert market.scheduled == [
        (asked["id"], datetime(2026, 11, 20, tzinfo=UTC)),
        (fallback["id"], datetime(2026, 12, 1, tzinfo=UTC)),
    ]  # end of the month
    assert adapter.calls == []


def test_a_billing_period_already_over_cancels_now_and_connect_refusing_a_past_date_does_too(
    journal: Journal, clock: Clock
) -> None:
    from processor.marketplace import ActionRefused

    over, racing = cancel_payload(8), cancel_payload(9)
    over["asset"]["billing"] = {"next_date": "2026-10-31T00:00:00+00:00"}
    racing["asset"]["billing"] = {
        "next_date": "2026-11-01T12:01:00+00:00"
    }  # a minute ahead of our clock
    market, adapter = PolicyMarketplace([over, racing]), StepAdapter()
    market.errors["schedule"].append(
        ActionRefused(400, "VAL_001", ["planned_date: must be in the future"])
    )
    engine = engine_for(
        journal, adapter, market, clock, config({"m": {"timing": "end_of_period"}}, default="m")
    )
    assert engine.handle(over) == "approved"
    assert engine.handle(racing) == "approved"
    assert market.scheduled == [] and len(adapter.terminate_calls()) == 2
    assert market.effective[racing["id"]] == datetime(2026, 11, 1, 12, 1, tzinfo=UTC)


def test_a_schedule_that_landed_before_a_crash_is_recognised(
    journal: Journal, clock: Clock
) -> None:
    from processor.marketplace import TransientError

    payload = cancel_payload(10)
    payload["asset"]["billing"] = {"next_date": "2026-11-20T00:00:00+00:00"}
    market, adapter = PolicyMarketplace([payload]), StepAdapter()
    market.errors["schedule"].append(TransientError("timeout after sending"))
    engine = engine_for(
        journal, adapter, market, clock, config({"m": {"timing": "end_of_period"}}, default="m")
    )
    assert engine.handle(payload) == "scheduled"
    assert journal.get(payload["id"]).data["scheduled"] is False  # type: ignore[union-attr]
    market.requests[payload["id"]]["status"] = "scheduled"  # it had landed after all
    clock.advance(3600)
    assert fire_timers(engine) == ["scheduled"]
    record = journal.get(payload["id"])
    assert (
        record is not None and record.data["scheduled"] is True and record.next_attempt_at is None
    )
    assert len(market.notes) == 1 and adapter.calls == []


def test_purge_waits_for_its_date_and_spares_an_account_restored_meanwhile(
    journal: Journal, clock: Clock
) -> None:
    kept, restored = cancel_payload(11), cancel_payload(12)
    market = PolicyMarketplace([kept, restored])
    adapter = StepAdapter(status=[SubscriptionStatus.TERMINATED, SubscriptionStatus.ACTIVE])
    engine = engine_for(
        journal, adapter, market, clock, config({"kept": {"retention_days": 30}}, default="kept")
    )
    assert [engine.handle(kept), engine.handle(restored)] == ["approved", "approved"]
    assert "kept until 2026-12-01" in market.notes[0][1]
    clock.advance(30 * DAY - 1)
    assert fire_timers(engine) == []  # one second early: not due
    clock.advance(1)
    assert sorted(fire_timers(engine)) == ["approved", "approved"]
    assert adapter.ops() == ["terminate", "terminate", "status", "purge", "status"]
    assert journal.get(kept["id"]).data.get("purged_at")  # type: ignore[union-attr]
    assert "restored" in journal.get(restored["id"]).data["purge"]  # type: ignore[union-attr]
    assert fire_timers(engine) == []


@pytest.mark.parametrize(
    ("vendor_status", "final"),
    [(SubscriptionStatus.ACTIVE, "closed"), (SubscriptionStatus.SUSPENDED, "parked")],
)
def test_a_cancellation_withdrawn_during_grace_is_never_terminated(
    journal: Journal, clock: Clock, vendor_status: SubscriptionStatus, final: str
) -> None:
    payload = cancel_payload(13)
    market, adapter = PolicyMarketplace([payload]), StepAdapter(status=[vendor_status])
    engine = engine_for(
        journal, adapter, market, clock, config({"g": {"grace_days": 10}}, default="g")
    )
    assert engine.handle(payload) == "suspended"
    market.requests[payload["id"]]["status"] = (
        "failed"  # a person reactivated the customer on Connect
    )
    clock.advance(10 * DAY)
    assert fire_timers(engine) == [final]
    assert adapter.ops() == ["suspend", "status"]


def test_a_refused_suspend_fails_the_request_with_the_vendors_reason(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(14)
    market, adapter = PolicyMarketplace([payload]), StepAdapter()
    adapter.answers["suspend"].append(Refused("Open invoices; contact billing."))
    engine = engine_for(
        journal, adapter, market, clock, config({"g": {"grace_days": 10}}, default="g")
    )
    assert engine.handle(payload) == "failed"
    assert market.failed == [(payload["id"], "Open invoices; contact billing.")]


# -- batches ---------------------------------------------------------------------------------------


def test_a_batch_answer_that_does_not_fit_makes_every_call_ambiguous(
    journal: Journal, clock: Clock
) -> None:
    payloads = [cancel_payload(n) for n in (21, 22, 23)]
    market, adapter = (
        PolicyMarketplace(payloads),
        StepAdapter(batch=True, idempotency=Idempotency.KEY),
    )
    adapter.answers["batch"].append([Terminated("ok")])  # one answer for three calls
    engine = engine_for(
        journal, adapter, market, clock, config({"acct": {"batch": True}}, default="acct")
    )
    assert {engine.batch_key(p) for p in payloads} == {"vendor|TA-0000-0000-0001"}
    assert set(engine.handle_batch(payloads).values()) == {
        "terminating"
    }  # deferred: the same key again later
    assert market.approved == [] and len(adapter.batches) == 1
    clock.advance(3600)
    assert {engine.handle(p) for p in payloads} == {"approved"}
    keys = {c.idempotency_key for c in adapter.batches[0]} | {
        c.idempotency_key for c in adapter.terminate_calls()
    }
    assert len(keys) == 3  # one key per request, the batch's and the single retries' alike


def test_a_batch_handles_each_requests_outcome_on_its_own(journal: Journal, clock: Clock) -> None:
    payloads = [cancel_payload(n) for n in (31, 32, 33)]
    market, adapter = PolicyMarketplace(payloads), StepAdapter(batch=True)
    adapter.answers["batch"].append([Terminated("ok"), Refused("Unpaid."), Ambiguous("timeout")])
    engine = engine_for(
        journal, adapter, market, clock, config({"acct": {"batch": True}}, default="acct")
    )
    results = engine.handle_batch(payloads)
    assert results == {
        payloads[0]["id"]: "approved",
        payloads[1]["id"]: "failed",
        payloads[2]["id"]: "terminating",
    }
    assert market.failed == [(payloads[1]["id"], "Unpaid.")]


def test_a_request_is_read_and_decided_once_whether_it_goes_alone_or_in_a_batch(
    journal: Journal, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's way: read each listed payload once, group by key, hand the group over."""
    import processor.engine.core as core

    parsed: list[str] = []
    decided: list[str] = []
    parse = core.parse_request

    def counting_parse(payload: Any, **options: Any) -> Any:
        parsed.append(str(payload.get("id")))
        return parse(payload, **options)

    monkeypatch.setattr(core, "parse_request", counting_parse)
    cfg = config(
        {"acct": {"batch": True}, "one": {}},
        rules=[{"match": {"product": "PRD-200-200-200"}, "policy": "one"}],
        default="acct",
    )
    policy = Policy(cfg)
    decide = policy.decide

    def counting_decide(request: Any, **options: Any) -> Any:
        decided.append(request.id)
        return decide(request, **options)

    monkeypatch.setattr(policy, "decide", counting_decide)
    payloads = [cancel_payload(n) for n in (41, 42, 43)]
    payloads.append(cancel_payload(44, product="PRD-200-200-200"))  # no batch there: alone
    payloads.append({"id": "PR-BAD", "type": "cancel", "status": "pending"})  # malformed
    market, adapter = PolicyMarketplace(payloads), StepAdapter(batch=True)
    engine = Engine(
        config=cfg,
        journal=journal,
        marketplace=market,
        adapters={"vendor": adapter},  # type: ignore[arg-type]
        owner="worker-1",
        clock=clock,
        policy=policy,
    )
    intakes = [engine.read(p) for p in payloads]
    keys = [engine.batch_key(i) for i in intakes]
    assert keys[:3] == ["vendor|TA-0000-0000-0001"] * 3 and keys[3:] == [None, None]
    results = engine.handle_batch(intakes)
    assert results[payloads[0]["id"]] == "approved" and len(adapter.batches) == 1
    assert results[payloads[3]["id"]] == "approved" and results["PR-BAD"] == "parked"
    ids = [str(p["id"]) for p in payloads]
    assert sorted(parsed) == sorted(ids)  # one parse each
    assert sorted(decided) == sorted(ids[:4])  # one decision each (not the malformed one)
    # Raw payloads (EaaS, tests): still one parse and one decision each, alone or batched.
    parsed.clear()
    decided.clear()
    more = [cancel_payload(n) for n in (51, 52)] + [cancel_payload(54, product="PRD-200-200-200")]
    market.requests.update({p["id"]: p for p in more})
    assert set(engine.handle_batch(more).values()) == {"approved"}
    assert sorted(parsed) == sorted(decided) == sorted(str(p["id"]) for p in more)


# -- the dry run -----------------------------------------------------------------------------------


def test_the_dry_run_shows_the_policy_and_the_dates_ahead(journal: Journal, clock: Clock) -> None:
    timed = cancel_payload(41)
    timed["asset"]["billing"] = {"next_date": "2026-11-20T00:00:00+00:00"}
    premium = cancel_payload(42, customer="TA-0000-0000-0042")
    market, adapter = PolicyMarketplace([timed, premium]), StepAdapter()
    cfg = config(
        {
            "monthly": {"timing": "end_of_period", "grace_days": 14, "retention_days": 60},
            "premium": {"route_to": {"email": "csm@x.example"}},
        },
        rules=[{"match": {"customer": "TA-0000-0000-0042"}, "policy": "premium"}],
        default="monthly",
    )
    engine = engine_for(journal, adapter, market, clock, cfg)
    plan = engine.plan(timed)
    assert plan.policy == "monthly"
    assert [str(s) for s in plan.steps] == [
        "schedule on Connect until 2026-11-20",
        "suspend via 'vendor' on 2026-11-20",
        "terminate via 'vendor' on 2026-12-04",
        "approve with TL-100-100-100 (effective 2026-11-20) on 2026-12-04",
        "purge via 'vendor' on 2027-02-02",
    ]
    assert plan.action.startswith("policy 'monthly': schedule")
    assert (
        engine.plan(premium).action
        == "policy 'premium': assign to csm@x.example, post one note, leave it pending for a person"
    )
    assert journal.get(timed["id"]) is None and market.scheduled == []  # touching nothing

    engine.handle(timed)  # scheduled; then Connect returns it and it is suspended
    market.requests[timed["id"]]["status"] = "pending"
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    engine.handle(timed)
    assert [str(s).split(" via")[0] for s in engine.plan(timed).steps] == [
        "terminate",
        "approve with TL-100-100-100 (effective 2026-11-20) on 2026-12-04",
        "purge",
    ]
    assert market.effective == {}


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"rules": [{"policy": "ghost"}]}, "rules[0].policy", "not defined under policies"),
        ({"defaults": {"policy": "ghost"}}, "defaults.policy", "not defined under policies"),
        (
            {"policies": {"p": {}}, "rules": [{"match": {"product": "PRD-9"}, "policy": "p"}]},
            "rules[0].match.product",
            "not configured",
        ),
        (
            {"policies": {"p": {"route_to": {"email": "a@b.example", "user_id": "UR-1"}}}},
            "policies.p.route_to",
            "exactly one of email or user_id",
        ),
        (
            {"policies": {"p": {"refuse": {"reason": "  "}}}},
            "policies.p.refuse.reason",
            "must not be empty",
        ),
        (
            {"policies": {"p": {"confirmation": "Gone on {deleted}."}}},
            "policies.p.confirmation",
            "unknown placeholder(s) deleted",
        ),
        (
            {"policies": {"p": {"batch": True, "grace_days": 3}}},
            "policies.p",
            "batch applies to immediate",
        ),
        (
            {"policies": {"p": {"timing": "someday"}}},
            "policies.p.timing",
            "'immediate' or 'end_of_period'",
        ),
        (
            {"policies": {"p": {"retention_days": -1}}},
            "policies.p.retention_days",
            "greater than or equal to 0",
        ),
    ],
)
def test_policy_configuration_errors_name_the_key(
    tmp_path: Any, data: dict[str, Any], key: str, expected: str
) -> None:
    import yaml

    from processor.config.schema import ConfigError

    base = {
        "adapters": {"v": {"type": "noop"}},
        "defaults": {"adapter": "v"},
        "products": {"PRD-1": {}},
    }
    merged = {**base, **data, "defaults": {**base["defaults"], **data.get("defaults", {})}}
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(merged), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert key in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_the_example_configuration_shows_every_kind_of_policy() -> None:
    from ..conftest import REPO

    cfg = load_config(REPO / "config" / "processor.example.yaml", environ={})
    kinds = {name: p for name, p in cfg.policies.items()}
    assert any(p.timing == "end_of_period" for p in kinds.values())
    assert any(p.grace_days and p.retention_days for p in kinds.values())
    assert any(p.route_to for p in kinds.values()) and any(p.refuse for p in kinds.values())
    assert any(p.require_reason for p in kinds.values()) and any(p.batch for p in kinds.values())
    assert cfg.rules and cfg.defaults.policy in cfg.policies
