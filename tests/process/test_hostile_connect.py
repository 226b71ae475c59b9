"""The daemon, in its own process, against a hostile stand-in for Connect (tests/hostile_connect),
case by case: after each, the daemon is still running, printed no traceback, made no vendor call
and no Connect action, and its peak memory (VmHWM) stayed under 200 MB, the 200 MB gzip case
included. One daemon meets every case in turn (a case is done once the daemon has come back for
two more listings after it began), so the file costs one start-up.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import State
from processor.ops.serving import ServerThread
from tests.hostile_connect import CASES, ECHO_KEY, HostileConnect

from .test_crash import processor_env

pytestmark = pytest.mark.slow

RSS_LIMIT_KB = 200 * 1024
CASE_SECONDS = 30  # the most one case may take before the test says the daemon stopped polling


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM line")


def _wait_listings(
    hostile: HostileConnect, mark: int, count: int, daemon: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + CASE_SECONDS
    while hostile.listings_since(mark) < count:
        assert daemon.poll() is None, "the daemon exited"
        assert time.monotonic() < deadline, "the daemon stopped listing"
        time.sleep(0.05)


# The cases whose one row the boundary refuses, and the id it is parked under.
REFUSED_ROWS = {
    "deep_in_a_row": "PR-9000-0000-0000-002",
    "nan_number": "PR-9000-0000-0000-003",
    "infinity_number": "PR-9000-0000-0000-004",
    "overflow_number": "PR-9000-0000-0000-005",
    "long_integer": "PR-9000-0000-0000-006",
    "duplicate_keys": "PR-9000-0000-0000-008",
}


def _wait_parked(
    tmp_path: Path,
    request_id: str,
    hostile: HostileConnect,
    mark: int,
    daemon: subprocess.Popen[str],
) -> None:
    """Until the journal holds ``request_id`` (parked), listing after listing, within the case's
    time: how many smaller pages that takes depends on where the pass was at the switch."""
    deadline = time.monotonic() + CASE_SECONDS
    while True:
        journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
        try:
            record = journal.get(request_id)
        finally:
            journal.close()
        if record is not None and record.state is State.PARKED:
            return
        assert daemon.poll() is None, "the daemon exited"
        assert time.monotonic() < deadline, (request_id, hostile.listings_since(mark))
        time.sleep(0.1)


def test_the_daemon_survives_every_hostile_answer_within_its_memory(tmp_path: Path) -> None:
    hostile = HostileConnect()
    log = tmp_path / "daemon.log"
    with Sandbox(generate=0, seed=1) as sandbox, ServerThread(hostile.app) as server:
        data = sandbox.config_data(
            f"sqlite:///{tmp_path}/journal.db",
            processing={"poll_interval": 0.1, "retry_base": 0.05, "retry_max": 0.2},
            connect={
                "endpoint": f"{server.url}/public/v1",
                "retry": {"max_attempts": 2, "backoff_base": 0.01, "backoff_max": 0.05},
            },
            log={"level": "info"},
        )
        # The stand-in's product is configured, so rows that pass the model reach the adapter's
        # own checks (the subscription id rule) and are parked there, before any vendor call.
        data["products"] = {"PRD-900-000-000": {"template": "TL-900-000-000"}}
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        with log.open("w") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", "--config", str(config)],
                env=processor_env(sandbox),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            _wait_listings(hostile, 0, 1, daemon)
            baseline = _peak_kb(daemon.pid)
            peaks: dict[str, int] = {}
            for name in [*CASES, ECHO_KEY]:
                written = log.stat().st_size
                mark = hostile.set_case(name)
                # Two listings after the switch: the first may have begun before it.
                _wait_listings(hostile, mark, 2, daemon)
                if name in REFUSED_ROWS:  # isolating it takes smaller pages: 100, 25, 6, 1, 1
                    _wait_parked(tmp_path, REFUSED_ROWS[name], hostile, mark, daemon)
                peaks[name] = _peak_kb(daemon.pid)
                assert daemon.poll() is None, f"{name}: the daemon exited"
                text = log.read_text(errors="replace")
                assert "Traceback" not in text, f"{name}: {text[written:][-3000:]}"
                assert peaks[name] < RSS_LIMIT_KB, f"{name}: peak {peaks[name]} kB"
                assert hostile.actions() == [], f"{name}: {hostile.actions()}"
                assert sandbox.vendor_ledger()["calls"] == [], name
                # What a case logs is bounded: no megabyte ids echoed, no line per byte.
                assert log.stat().st_size - written < 256 * 1024, f"{name}: {text[written:][:2000]}"
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert daemon.returncode == 0, text[-3000:]
    # The key, echoed back by Connect in every form, is printed in none of them.
    key = sandbox.api_key
    secret = key.rsplit(":", 1)[-1]
    assert "AUTH_ECHO" in text and "you sent ***" in text  # the echo reached the log, masked
    for form in (
        secret,
        base64.b64encode(key.encode()).decode(),
        base64.b64encode(secret.encode()).decode()[:-4],
        quote(key, safe=""),
        quote_plus(key),
    ):
        assert form not in text, form
    inner = base64.b64encode(f"Authorization: {key}".encode()).decode()
    assert inner[20:-8] not in text
    # Rows with a usable request id and a hostile inner id: each parked as malformed, with why.
    journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        for number in range(20, 29):
            record = journal.get(f"PR-9000-0000-0000-0{number}")
            assert record is not None and record.state is State.PARKED, number
            assert (record.reason or "").startswith("malformed request: "), record.reason
        # An overlong subscription id is refused when read; a 15 MB text under every cap is read
        # and handled as any request (parked here: it has no subscription id).
        record = journal.get("PR-9000-0000-0000-001")
        assert record is not None and record.state is State.PARKED
        assert "longer than 256 characters" in (record.reason or "")
        record = journal.get("PR-9000-0000-0000-030")
        assert record is not None and record.state is State.PARKED, record
        # A row the boundary refuses (a NaN, a number too large, a duplicate key, nesting past
        # the cap) is found with smaller pages and parked by the id read leniently from it: it
        # no longer holds the listing up, and it is never acted on.
        refused = {
            "002": "nested deeper than 64 levels",
            "003": "NaN is not a number JSON allows",
            "004": "-Infinity is not a number JSON allows",
            "005": "a number too large to be finite",
            "006": "an integer longer than 30 digits",
            "008": "duplicate key 'id'",  # the last of the two ids, as a lenient reader takes it
        }
        for number, why in refused.items():
            record = journal.get(f"PR-9000-0000-0000-{number}")
            assert record is not None and record.state is State.PARKED, number
            assert "Connect sent it in a form that cannot be read" in (record.reason or "")
            assert why in (record.reason or ""), record.reason
        # A request id that is no id was never journaled: nothing can address it.
        assert journal.get("../requests/PR-9000-0000-0000-017") is None
    finally:
        journal.close()
    print(f"baseline {baseline} kB; peaks: {peaks}")
    # The boundary's own words reached the log for the cases it refused.
    # Refused answers with no request id to read stop the pass at that row, saying so.
    assert "cannot be read (list_pending: the answer is not usable JSON: nested deeper" in text
    # A 20 MB page: refused, asked in smaller pages (each refusal one line), and, served the
    # same by this stand-in whatever the limit, finally the pass stops at it when time allows.
    assert '"event":"listing_page_refused"' in text and "the answer is larger than" in text
    assert "NaN is not a number JSON allows" in text and "duplicate key 'id'" in text
    assert "request id '../requests/PR-9000-0000-0000-017' is not a Connect request id" in text
