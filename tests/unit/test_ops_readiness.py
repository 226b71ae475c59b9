"""Readiness checks: a cached check runs once per TTL, reports its failure, answers from its last
success while a call hangs, and readiness needs every check and every circuit."""

from __future__ import annotations

from processor.ops.readiness import CachedCheck, is_ready

# -- readiness checks ------------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_check_runs_at_most_once_per_ttl() -> None:
    ticks, runs = Ticks(), []
    check = CachedCheck(lambda: runs.append(1) or True, ttl=30, clock=ticks, wait=5)
    assert check() and check()
    assert len(runs) == 1
    ticks.now += 31
    assert check()
    assert len(runs) == 2


def test_a_cached_check_fails_with_the_reason_and_recovers() -> None:
    ticks, answers = Ticks(), [RuntimeError("503 from Connect"), True]

    def probe() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    check = CachedCheck(probe, ttl=10, clock=ticks, wait=5)
    assert check() is False
    assert check.error == "RuntimeError: 503 from Connect"
    ticks.now += 11
    assert check() is True and check.error is None


def test_a_hanging_check_answers_from_its_last_success_until_that_is_too_old() -> None:
    import threading

    ticks, hanging, release, calls = Ticks(), threading.Event(), threading.Event(), []

    def probe() -> bool:
        calls.append(1)
        if len(calls) > 1:  # Connect hangs from the second call on
            hanging.set()
            release.wait(10)
        return True

    check = CachedCheck(probe, ttl=10, max_age=30, clock=ticks, wait=5)
    try:
        assert check() is True
        check.wait = 0  # from now on, never wait for the hanging call
        ticks.now += 20  # stale: a second run starts and hangs
        assert check() is True  # the last success is 20 s old, within max_age
        assert hanging.wait(5)
        ticks.now += 15
        assert check() is False  # 35 s since the last success
        assert len(calls) == 2  # one run at a time, however often asked
    finally:
        release.set()


def test_is_ready_needs_every_check_true_and_every_circuit_closed() -> None:
    assert is_ready({"journal": True, "connect": True, "circuits": {"v": "closed"}, "errors": {}})
    assert not is_ready({"journal": True, "connect": False})
    assert not is_ready({"journal": True, "circuits": {"v": "open"}})
    assert not is_ready({"journal": "yes"})
