"""The anomaly guard's window rules, and its latch file shared by processes and ``resume``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from processor.config.schema import GuardConfig, load_config
from processor.engine.circuit import CircuitBreaker
from processor.engine.guard import AnomalyGuard, LatchFile, latch_path
from processor.observe import Metrics
from processor.ops import resume


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guard_on(path: Path, ticks: Ticks | None = None, **settings: object) -> AnomalyGuard:
    breakers = {"vendor": CircuitBreaker("vendor"), "backup": CircuitBreaker("backup")}
    return AnomalyGuard(
        GuardConfig(**settings), breakers, Metrics(), LatchFile(path), clock=ticks or Ticks()
    )


def test_in_a_row_latches_and_a_terminated_answer_breaks_the_run(tmp_path: Path) -> None:
    guard = guard_on(tmp_path / "latches.json", in_a_row=4)
    for outcome in ["already_gone"] * 3 + ["terminated"] + ["already_gone"] * 3:
        assert guard.record("vendor", outcome) is None
    why = guard.record("vendor", "already_gone")
    assert why == "4 already_gone answers in a row; resume with: cancel-processor resume vendor"
    assert guard.breakers["vendor"].latched == why and not guard.breakers["backup"].is_open
    assert (
        guard.metrics.registry.get_sample_value("cancel_vendor_anomaly", {"adapter": "vendor"}) == 1
    )


def test_more_than_the_share_of_a_full_window_latches(tmp_path: Path) -> None:
    guard = guard_on(tmp_path / "latches.json", in_a_row=10, window=10, share=0.5)
    pattern = ["terminated", "refused"] * 5  # exactly half: not more than half
    assert all(guard.record("vendor", o) is None for o in pattern)
    assert (
        guard.record("vendor", "refused")
        == "6 of the last 10 answers were refused; resume with: cancel-processor resume vendor"
    )


def test_other_outcomes_and_unknown_adapters_are_not_counted(tmp_path: Path) -> None:
    guard = guard_on(tmp_path / "latches.json", in_a_row=2)
    for outcome in ("failed", "retry_later", "ambiguous"):
        assert guard.record("vendor", outcome) is None
    assert guard.record("elsewhere", "already_gone") is None
    assert (
        guard_on(tmp_path / "off.json", in_a_row=2, enabled=False).record("vendor", "already_gone")
        is None
    )


def test_a_latch_reaches_other_processes_and_resume_lifts_it_everywhere(tmp_path: Path) -> None:
    path, ticks = tmp_path / "journal.db.guard.json", Ticks()
    config = tmp_path / "processor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
                "adapters": {"vendor": {"type": "noop"}},
            }
        )
    )
    assert latch_path(load_config(config, environ={})) == path
    first, second = guard_on(path, ticks, in_a_row=2), guard_on(path, ticks, in_a_row=2)
    first.record("vendor", "refused")
    first.record("vendor", "refused")
    assert not second.breakers["vendor"].is_open
    ticks.now += 1.5  # the file is read at most once a second
    second.sync()
    assert "2 refused answers in a row" in (second.breakers["vendor"].latched or "")
    assert guard_on(path).breakers["vendor"].latched  # a process started later: latched at once

    args = argparse.Namespace(adapter="vendor", config=str(config))
    assert resume.run(args) == 0 and LatchFile(path).read() == {}
    ticks.now += 1.5
    first.sync()
    second.sync()
    assert not first.breakers["vendor"].is_open and not second.breakers["vendor"].is_open
    assert resume.run(args) == 1
    assert resume.run(argparse.Namespace(adapter="nope", config=str(config))) == 2


def test_an_unreadable_latch_file_keeps_what_is_latched(tmp_path: Path) -> None:
    path, ticks = tmp_path / "latches.json", Ticks()
    guard = guard_on(path, ticks, in_a_row=2)
    guard.record("vendor", "already_gone")
    guard.record("vendor", "already_gone")
    path.write_text("{not json")
    ticks.now += 2
    guard.sync()
    assert guard.breakers["vendor"].latched  # never resumed by a file nobody can read
    with pytest.raises(OSError):
        LatchFile(path).read()


def test_a_run_longer_than_the_window_is_a_configuration_error() -> None:
    from processor.config.schema import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(None, environ={"CANCEL_PROCESSOR_GUARD__IN_A_ROW": "60"})
    # The value came from the environment, so the message names the variable, not a file.
    assert str(error.value) == (
        "environment variable CANCEL_PROCESSOR_GUARD__IN_A_ROW: guard: in_a_row (60) must not "
        "exceed window (50)"
    )
