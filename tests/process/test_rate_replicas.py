"""A rate limit shared by replicas, proven with real processes: three ``run --once`` processes on
one PostgreSQL journal (a fresh schema), each configured with the vendor's own limit, against the
mock vendor enforcing that limit (429 past it). Shared through the journal, together they stay
under it: no 429. The same three with ``shared: false`` each send up to the limit and the vendor
answers 429; both counts are printed (``-s``), the shared one is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.daemons import fresh_schema
from cancel_sandbox.local import Sandbox

from .test_crash import processor_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPLICAS = 3
LIMIT = 8  # calls per second, the vendor's and each replica's configured limit
REQUESTS = 36


@pytest.fixture
def journal_url(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url, prefix="rate_replicas") as url:
        yield url


def _replicas(box: Sandbox, tmp_path: Path, journal_url: str, shared: bool) -> list[int]:
    data = box.config_data(
        journal_url, processing={"concurrency": 4, "once_max_wait": 30, "notes": False}
    )
    data["adapters"]["vendor"]["options"]["rate"] = {"calls": LIMIT, "per": 1, "shared": shared}
    config = tmp_path / f"processor-{shared}.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = processor_env(box)
    migrate = [sys.executable, "-m", "processor", "journal", "migrate", "--config", str(config)]
    subprocess.run(migrate, env=env, check=True, capture_output=True, timeout=60)
    once = [sys.executable, "-m", "processor", "run", "--once", "--no-progress", "-c", str(config)]
    runs = [
        subprocess.Popen(
            once,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(REPLICAS)
    ]
    codes = []
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert "Traceback" not in err, err[-2000:]
        codes.append(run.returncode)
    return codes


@pytest.mark.parametrize("shared", [True, False])
def test_three_replicas_share_the_vendors_limit(
    tmp_path: Path, journal_url: str, shared: bool
) -> None:
    vendor = {"rate_calls": LIMIT, "rate_per": 1, "work_ms": 20}
    with Sandbox(generate=REQUESTS, seed=9, refuse_pattern="", vendor_options=vendor) as box:
        pending = box.pending_cancels()
        codes = _replicas(box, tmp_path, journal_url, shared)
        summary = box.vendor_ledger()["summary"]
        outcome = box.check(initially_pending=pending)
    print(f"\n[rate replicas shared={shared}] 429s={summary['rate_limited_calls']} codes={codes}")
    assert outcome.duplicate_terminations == 0 and outcome.lost == 0, outcome
    if shared:
        assert summary["rate_limited_calls"] == 0, summary
        assert outcome.pending == 0 and codes == [0] * REPLICAS, (outcome, codes)
