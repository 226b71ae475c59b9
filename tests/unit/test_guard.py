"""The anomaly guard's window rules, and its latch file shared by processes and ``resume``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from processor.config.schema import GuardConfig, load_config
from processor.engine.circuit import CircuitBreaker
from processor.engine.guard import AnomalyGuard, LatchFile, latch_path
from processor.journal import open_journal
from processor.observe import Metrics
from processor.ops import resume


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guard_on(path: Path, ticks: Ticks | None = None, **settings: object) -> AnomalyGuard:
    """A guard on two adapters; the rate rule off unless ``min_sample`` is given (the count
    rules' tests below would trip it first)."""
    settings.setdefault("min_sample", 10_000)
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
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")  # a daemon ran
    journal.migrate()
    journal.close()
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


def test_the_rate_over_the_window_latches_once_the_minimum_sample_is_in(tmp_path: Path) -> None:
    """Six refusals in ten answers never make ten in a row, nor fill a window of fifty: the rate
    over the last ``rate_window`` seconds catches it, once ``min_sample`` answers are in."""
    ticks = Ticks()
    guard = guard_on(tmp_path / "latches.json", ticks, min_sample=5, rate_window=60, share=0.5)
    assert guard.record("vendor", "refused") is None  # one genuine refusal on a quiet day
    for outcome in ["terminated", "refused", "terminated"]:
        ticks.now += 10
        assert guard.record("vendor", outcome) is None  # 2 of 4: below the minimum sample
    ticks.now += 10
    assert guard.record("vendor", "terminated") is None  # 2 of 5: not more than half
    ticks.now += 10
    assert guard.record("vendor", "refused") is None  # 3 of 6: not more than half
    ticks.now += 10
    why = guard.record("vendor", "refused")
    assert why is not None and why.startswith("4 of the 7 answers of the last 60 s were refused")


def test_answers_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    ticks = Ticks()
    guard = guard_on(tmp_path / "latches.json", ticks, min_sample=5, rate_window=60)
    for _ in range(4):
        assert guard.record("vendor", "already_gone") is None
    ticks.now += 61  # a slow trickle: those four are out of the window
    for _ in range(4):
        assert guard.record("vendor", "already_gone") is None
    assert guard.record("vendor", "already_gone") is not None  # five within the window


def test_answers_recalled_from_the_journal_count_at_their_age(tmp_path: Path) -> None:
    """A daemon that starts counts the answers the journal shows from the window (``ago``)."""
    ticks = Ticks()
    ticks.now = 1000.0
    guard = guard_on(tmp_path / "latches.json", ticks, min_sample=5, rate_window=60)
    for ago in (300, 200, 100):  # outside the window: forgotten at once
        assert guard.record("vendor", "refused", ago=ago) is None
    for ago in (40, 30, 20, 10):
        assert guard.record("vendor", "refused", ago=ago) is None
    assert guard.record("vendor", "refused") is not None  # the fifth within 60 s


def test_an_accepted_answer_counts_in_its_place_and_is_resolved_later(tmp_path: Path) -> None:
    """Asynchronous steps: acceptances break a run of refusals when they come; each is resolved
    into what its operation turned out, in its place, so failures latch like refusals."""
    guard = guard_on(tmp_path / "latches.json", in_a_row=4)
    for outcome in ["accepted", "refused"] * 4:
        assert guard.record("vendor", outcome) is None  # never two refusals in a row
    for _ in range(3):
        assert guard.resolve("vendor", "refused") is None  # the oldest acceptances failed
    why = guard.resolve("vendor", "refused")
    assert why is not None and why.startswith("8 refused answers in a row")
    fresh = guard_on(tmp_path / "other.json", in_a_row=2)
    assert fresh.resolve("vendor", "terminated") is None  # nothing accepted in memory: noted
    assert fresh.record("vendor", "refused") is None  # the termination broke the run
