"""How many processor modules one immediate termination runs through (issue 23's figure).

One pending request, an adapter that terminates at once, an in-memory marketplace and an SQLite
journal in memory: the request is handled once to warm imports, then a second request is handled
under ``sys.setprofile`` and every ``processor`` module whose code ran is counted. Run from the
repository root: ``python -m bench.trace_modules`` (``--list`` prints the modules).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from processor.config.schema import load_config
from processor.engine.core import Engine
from processor.journal import open_journal
from processor.observe import Metrics
from tests.fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload

ROOT = Path(__file__).resolve().parent.parent / "processor"


def modules_of_one_termination() -> list[str]:
    clock = Clock()
    config = load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor"},
            "products": {"PRD-100-100-100": {"template": "TL-100-100-100"}},
        }
    )
    journal = open_journal("sqlite:///:memory:", clock=clock)
    journal.migrate()
    warm, traced = cancel_payload(1), cancel_payload(2)
    market = FakeMarketplace([warm, traced])
    engine = Engine(
        config=config,
        journal=journal,
        marketplace=market,
        adapters={"vendor": ScriptedAdapter()},
        owner="trace",
        metrics=Metrics(),
        clock=clock,
    )
    assert engine.handle(warm) == "approved"
    seen: set[str] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            seen.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        reached = engine.handle(traced)
    finally:
        sys.setprofile(None)
    journal.close()
    assert reached == "approved", reached
    inside = sorted(
        str(Path(name).resolve().relative_to(ROOT.parent))
        for name in seen
        if Path(name).resolve().is_relative_to(ROOT)
    )
    return inside


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_modules")
    parser.add_argument("--list", action="store_true", help="print the modules, one a line")
    args = parser.parse_args(argv)
    modules = modules_of_one_termination()
    if args.list:
        print("\n".join(modules))
    engine = [m for m in modules if m.startswith("processor/engine/")]
    print(f"modules: {len(modules)} (engine: {len(engine)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
