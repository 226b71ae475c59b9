"""``cancel-processor waiting``: what waits for people (and dates), read from a real journal
file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.cli.waiting import configure_parser, run
from processor.config.schema import ConfigError, load_config
from processor.engine.core import Engine
from processor.journal import open_journal
from processor.observe import Metrics

from ..fakes import Clock, cancel_payload
from ..policy_fakes import PolicyMarketplace, StepAdapter

PRODUCT = "PRD-100-100-100"


def write_config(tmp_path: Path) -> Path:
    data = {
        "journal": {"url": f"sqlite:///{tmp_path}/journal.db"},
        "adapters": {"vendor": {"type": "noop"}},
        "defaults": {"adapter": "vendor", "policy": "graceful"},
        "products": {PRODUCT: {"template": "TL-1"}},
        "policies": {
            "graceful": {"grace_days": 10, "retention_days": 30},
            "premium": {"route_to": {"email": "csm@vendor.example"}},
        },
        "rules": [{"match": {"customer": "TA-0000-0000-0042"}, "policy": "premium"}],
    }
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def args(path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["--config", str(path), *extra])


def test_lists_requests_routed_to_people_and_with_timers_the_dates_ahead(
    tmp_path: Path, capsys: Any
) -> None:
    path = write_config(tmp_path)
    config = load_config(path, environ={})
    clock = Clock()
    journal = open_journal(config.journal.url, clock=clock)
    journal.migrate()
    routed, graced = cancel_payload(1, customer="TA-0000-0000-0042"), cancel_payload(2)
    engine = Engine(
        config=config,
        journal=journal,
        marketplace=PolicyMarketplace([routed, graced]),
        adapters={"vendor": StepAdapter()},
        owner="w",
        metrics=Metrics(),
        clock=clock,
    )
    assert [engine.handle(routed), engine.handle(graced)] == ["waiting_human", "suspended"]
    journal.close()

    assert run(args(path, "--format", "json")) == 0
    [person] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert person["request_id"] == routed["id"] and person["waits_for"] == "csm@vendor.example"
    assert person["policy"] == "premium"

    assert run(args(path, "--timers", "--format", "json")) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["request_id"], r["waits_for"], r["until"]) for r in rows] == [
        (routed["id"], "csm@vendor.example", None),
        (graced["id"], "end of grace: terminate", "2026-11-11T12:00:00+00:00"),
    ]
    assert run(args(path)) == 0
    assert "csm@vendor.example" in capsys.readouterr().out


def test_never_creates_a_journal(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with pytest.raises(ConfigError, match="no journal at"):
        run(args(path))
    assert not (tmp_path / "journal.db").exists()
