"""Not the only journal, against the real mocks: a second processor with its own journal, and this
journal restored from a backup taken before requests it terminated were approved.

The mock vendor counts every effective termination (``Sandbox.check``); in mode ``read`` a repeated
terminate acts again, so a duplicate shows as it would in the world. Without the signs of
:mod:`processor.engine.guard` two journals terminated nearly every subscription twice, and a stale
restore all of those it held back.
"""

from __future__ import annotations

import argparse
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.daemon.summary import RunSummary
from processor.engine.guard import LatchFile, latch_path
from processor.journal import open_journal
from processor.ops import resume

SIGN = "another processor or a restored journal"
CONCURRENCY = 4


def config_for(sandbox: Sandbox, where: Path, **processing: Any) -> Config:
    where.mkdir(parents=True, exist_ok=True)
    data = sandbox.config_data(
        f"sqlite:///{where / 'journal.db'}",
        processing={
            "concurrency": CONCURRENCY,
            "retry_base": 0.2,
            "retry_max": 0.5,
            "once_max_wait": 4,
            "notes": False,
            **processing,
        },
    )
    path = where / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return Config.model_validate({**data, "source": str(path)})


def run_once(config: Config) -> RunSummary:
    runtime = build_runtime(config)
    try:
        return Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True).run()
    finally:
        runtime.close()


def latch_reason(config: Config) -> str:
    return LatchFile(latch_path(config)).read().get("vendor", {}).get("reason", "")


def marketplace_faults(sandbox: Sandbox, **settings: Any) -> None:
    url = f"{sandbox.marketplace.url}/admin/faults"
    requests.put(url, json=settings, timeout=5).raise_for_status()


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def use(sandbox: Sandbox) -> Sandbox:
        for name, value in sandbox.environ().items():
            monkeypatch.setenv(name, value)
        return sandbox

    yield use


def test_a_second_journal_duplicates_at_most_what_was_in_flight(
    tmp_path: Path, environ: Any
) -> None:
    vendor_latency = {"latency_ms": 40.0, "latency_jitter_ms": 40.0}
    with Sandbox(
        generate=40, seed=3, vendor_mode="read", refuse_pattern="", vendor_faults=None
    ) as box:
        environ(box)
        requests.put(
            f"{box.vendor.url}/admin/faults", json=vendor_latency, timeout=5
        ).raise_for_status()
        pending = box.pending_cancels()
        configs = [config_for(box, tmp_path / name) for name in ("a", "b")]
        threads = [threading.Thread(target=run_once, args=(c,)) for c in configs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        check = box.check(initially_pending=pending)
        reasons = [latch_reason(c) for c in configs]
    print("second journal:", check.duplicate_terminations, "duplicates;", reasons)
    # Each process can have CONCURRENCY requests in flight when the first sign shows.
    assert check.duplicate_terminations <= 2 * CONCURRENCY, (check, reasons)
    assert any(SIGN in why for why in reasons), reasons
    assert check.approvals_without_termination == 0 and check.lost == 0
    assert len(pending) == 40 and check.effective_terminations >= CONCURRENCY


@pytest.mark.parametrize("mode", ["read", "key", "natural"])
def test_a_stale_restore_terminates_nothing_twice(tmp_path: Path, environ: Any, mode: str) -> None:
    with Sandbox(generate=8, seed=9, vendor_mode=mode, refuse_pattern="") as box:
        environ(box)
        pending = box.pending_cancels()
        quick = {"max_attempts": 2, "backoff_base": 0.05, "backoff_max": 0.1}
        config = config_for(box, tmp_path, once_max_wait=1)
        config = config.model_copy(
            update={
                "connect": config.connect.model_copy(
                    update={"retry": config.connect.retry.model_copy(update=quick)}
                )
            }
        )
        journal_file = tmp_path / "journal.db"
        store = open_journal(config.journal.url)
        store.migrate()
        store.close()
        shutil.copy(journal_file, tmp_path / "backup.db")  # the backup: before any termination

        # An approve outage: every subscription terminated at the vendor, none approved.
        marketplace_faults(box, error_rate=1.0, methods="POST", path_pattern="/approve$")
        run_once(config)
        assert box.pending_cancels() == pending
        terminated = box.check(initially_pending=pending).effective_terminations
        assert terminated == len(pending)

        # The journal is restored from the backup; Connect approves again.
        for suffix in ("-wal", "-shm"):
            Path(f"{journal_file}{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp_path / "backup.db", journal_file)
        marketplace_faults(box)
        run_once(config)
        if mode == "read":
            # The read before the first terminate saw the earlier termination: latched at once.
            assert SIGN in latch_reason(config)
            assert resume.run(argparse.Namespace(adapter="vendor", config=config.source)) == 0
            patient = config.processing.model_copy(update={"once_max_wait": 10})
            run_once(config.model_copy(update={"processing": patient}))
            assert latch_reason(config) == ""  # the rows the resume saw do not latch again
        check = box.check(initially_pending=pending)
    assert check.duplicate_terminations == 0, check
    assert check.effective_terminations == len(pending)
    assert check.approved == len(pending) and check.approvals_without_termination == 0
