"""Chaos soak: real processor daemons against the sandbox, under a bounded schedule of faults.

Run: ``python -m bench.soak [--requests 10000] [--store sqlite|postgres] [--mode
key|natural|read|none]``.

1. A sandbox (mock marketplace and mock vendor on loopback) is seeded with a first batch of the
   cancels; the daemons (``python -m processor run``: one on SQLite, or three replicas on a fresh
   PostgreSQL schema) drain it with no fault: the baseline throughput.
2. The rest of the N cancels are seeded at once, and a schedule drawn from the seed runs, bounded in
   count and in time: SIGKILL of a random daemon every few seconds (restarted at once), SIGSTOP of a
   daemon holding claims for longer than the lease (then SIGCONT), and one storm of each kind, set
   on the mocks at run time through ``PUT /admin/faults``: 5xx, 429 with Retry-After,
   apply-then-drop, latency beyond the client timeouts, the vendor down. Pauses and storms take
   turns, each in a slot of its own. Throughout, a small share of the POSTs to both mocks is applied
   and then has its connection dropped. Unless ``--fault-seconds`` is given, the window is fitted to
   the backlog (what the rest would take at the fault-free rate, plus a fifth), so that the faults
   land on work in flight whatever N is.
3. After the last fault heals, it waits (bounded) until nothing is left to do: nothing open in the
   journal and nothing pending on Connect but what is parked for a person. Every daemon is stopped
   with SIGTERM, and the checker (bench/checker.py) reads both ledgers and the journal and prints
   one table. The exit status is 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.checker import Report, RunFacts, check, final_times, render_markdown
from bench.daemons import Daemon, fresh_schema, has_moved, held_by, taken_from
from bench.evidence import keep_evidence
from bench.soak_control import Mocks, ensure_running, journal_open_and_parked, wait_quiet
from bench.soak_plan import CLIENT_TIMEOUT, STORMS, Event, Schedule, SoakSettings
from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.late import LateSettings
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.outcomes import async_adapter_options

# The mocks' counter each storm must move before it may end, and how far past its length it may
# stretch waiting for that (latency and vendor-down have no counter of their own).
STORM_COUNTER = {"5xx": "errors", "429": "throttles", "drops": "drops"}
STORM_STRETCH = 4.0
# Seconds a restarted daemon may take to reach its first step before it may be killed all the same
# (start-up alone took 3 to 8 s on a loaded machine).
START_GRACE = 20.0
# Seconds a daemon seen at work keeps working before it may be killed: calls for the storms to meet.
WORK_BEFORE_KILL = 3.0

__all__ = ["STORMS", "SoakSettings", "main", "run_soak"]


def _rate(times: list[float], since: float | None = None) -> float:
    """Requests per second: from ``since`` (or the first to become final) to the last."""
    if not times:
        return 0.0
    start = since if since is not None else min(times)
    count = len(times) if since is not None else len(times) - 1
    span = max(times) - start
    return count / span if span > 0 else float("nan")


def _config(sandbox: Sandbox, settings: SoakSettings, journal_url: str) -> dict[str, Any]:
    data = sandbox.config_data(
        journal_url,
        processing={
            "concurrency": settings.concurrency,
            "poll_interval": 0.3,
            "notes": False,
            "shutdown_timeout": 10,
            "retry_base": 0.2,
            "retry_max": 2.0,
        },
        journal={"lease_seconds": settings.lease_seconds, "pool_size": settings.concurrency + 4},
    )
    data["connect"]["timeout_read"] = CLIENT_TIMEOUT
    data["adapters"]["vendor"]["options"]["timeout"] = {"connect": 2, "read": CLIENT_TIMEOUT}
    # Quiet by default (a soak's daemons log thousands of lines); SOAK_LOG_LEVEL=info shows what
    # each daemon did, second by second, when a run needs explaining.
    data["log"]["level"] = os.environ.get("SOAK_LOG_LEVEL", "warning")
    if settings.apply_horizon is not None:
        data["adapters"]["vendor"]["apply_horizon"] = settings.apply_horizon
    if settings.async_delay > 0:  # the mock vendor's asynchronous mode: 202, then a poll
        vendor = data["adapters"]["vendor"]
        vendor["options"] = async_adapter_options(vendor["options"], every=0.5, give_up=600)
    return data


def run_soak(
    settings: SoakSettings,
    command: str = "python -m bench.soak",
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> Report:
    """One soak, start to finish; the checker's report."""
    rng = random.Random(settings.seed)
    started = time.monotonic()
    facts = RunFacts(
        seed=settings.seed,
        mode=settings.mode,
        command=command,
        store=f"{settings.store}, {settings.processes} "
        f"process{'es' if settings.processes > 1 else ''}",
    )
    with ExitStack() as stack:
        # A work directory of our own is removed after a clean run only: a failed one keeps the
        # evidence.
        workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="soak-"))
        workdir.mkdir(parents=True, exist_ok=True)
        if settings.store == "postgres":
            journal_url = stack.enter_context(fresh_schema(settings.postgres_url, "soak"))
        else:
            journal_url = f"sqlite:///{workdir / 'journal.db'}"
        late = LateSettings(settings.late_delay, settings.late_jitter)
        vendor_options: dict[str, Any] = {"late": late} if late.on else {}
        if settings.async_delay > 0:
            vendor_options["operations"] = OperationSettings(
                on=True, delay=settings.async_delay, jitter=settings.async_delay
            )
        sandbox = stack.enter_context(
            Sandbox(
                generate=settings.baseline_requests,
                seed=settings.seed,
                vendor_mode=settings.mode,
                vendor_options=vendor_options or None,
            )
        )
        mocks = Mocks(sandbox, settings, settings.seed * 1000)
        mocks.set(None, drops=False)
        baseline_ids = sandbox.pending_cancels()
        config = workdir / "processor.yaml"
        config.write_text(yaml.safe_dump(_config(sandbox, settings, journal_url)), encoding="utf-8")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
        }
        env.update(sandbox.environ())
        migrated = subprocess.run(
            [sys.executable, "-m", "processor", "journal", "migrate", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"journal migrate failed: {migrated.stderr[-1500:]}")
        daemons = [
            Daemon(f"daemon-{i}", config, env, workdir / f"daemon-{i}.log")
            for i in range(settings.processes)
        ]
        stack.callback(
            lambda: [d.kill() for d in daemons]
        )  # whatever happens, nothing is left running

        # 1. The fault-free batch.
        say(f"baseline: {len(baseline_ids)} requests, {len(daemons)} daemon(s) on {settings.store}")
        for daemon in daemons:
            daemon.start()
        if wait_quiet(mocks, journal_url, settings.baseline_seconds, say, daemons) is None:
            say("baseline batch did not finish within its budget")
        base_times = list(final_times(sandbox.marketplace.url, baseline_ids).values())
        facts.baseline_requests, facts.baseline_rate = len(base_times), _rate(base_times)

        # 2. The rest, under the schedule: unless told, the window is what the rest would take at
        # the fault-free rate, and a fifth more, so that the faults land on work in flight (they
        # slow the drain down) and the kills keep their pace whatever the size of the run.
        rest = settings.requests - len(baseline_ids)
        window = settings.fault_seconds or min(
            600.0, max(30.0, 1.2 * rest / (facts.baseline_rate or 1.0))
        )
        schedule = Schedule(settings, rng, window)
        fault_start_wall = time.time()
        fault_ids = mocks.seed_more(rest) if rest > 0 else set()
        say(f"faults: {len(fault_ids)} more requests, {len(schedule)} events within {window:.0f} s")
        mocks.set(None, drops=True)
        phase = time.monotonic()
        pause_began: dict[str, float] = {}
        frozen_by_pause: dict[int, Daemon] = {}
        held_when_frozen: dict[str, dict[str, int]] = {}
        queue = list(schedule.events)
        storm_began: dict[str, tuple[float, dict[str, int]]] = {}
        at_work: dict[int, float] = {}  # pid -> when it was first seen to have moved a request
        heapq.heapify(queue)
        last_heal = phase
        while queue and time.monotonic() - phase < window + 30:
            event = queue[0]
            wait = event.at - (time.monotonic() - phase)
            if wait > 0:
                time.sleep(min(wait, 0.1))
                continue
            heapq.heappop(queue)
            ensure_running(daemons)
            now = time.monotonic() - phase
            if event.kind == "kill":
                candidates = [d for d in daemons if not d.frozen]
                if not candidates:  # the only daemon is frozen: kill it once it is thawed
                    heapq.heappush(queue, Event(now + 0.5, "kill"))
                    continue
                # Kill only a daemon at work (it has moved a request since it started), or one
                # given a fair while to get there: on a loaded machine start-up alone (imports)
                # takes longer than the gap between kills, and a daemon killed before its first
                # step makes no call, so the storms met none and nothing moved for the whole phase.
                for d in candidates:
                    if d.pid not in at_work and has_moved(journal_url, d.pid):
                        at_work[d.pid] = time.monotonic()
                working = [
                    d
                    for d in candidates
                    if d.uptime() > START_GRACE
                    or time.monotonic() - at_work.get(d.pid, time.monotonic()) >= WORK_BEFORE_KILL
                ]
                if not working and now < window + 25:  # within the loop's own bound
                    heapq.heappush(queue, Event(now + 0.2, "kill"))
                    continue
                victim = rng.choice(working or candidates)
                victim.kill()
                victim.start()
                facts.kills += 1
                last_heal = time.monotonic()
            elif event.kind == "freeze":
                pause_id, length, give_up = event.arg
                awake = [d for d in daemons if not d.frozen]
                if not awake:
                    continue
                # Prefer a daemon holding claims now: a pause is meant to strand claims (one
                # restarting holds none, and under load most of them may be restarting).
                holding = [d for d in awake if held_by(journal_url, d.pid)]
                victim = rng.choice(holding or awake)
                victim.freeze()
                time.sleep(0.1)  # statements it had already sent still run on the server
                held = held_by(journal_url, victim.pid)
                if not held and now < give_up:  # between requests (or starting): try again shortly
                    victim.thaw()
                    heapq.heappush(queue, Event(now + 0.2, "freeze", event.arg))
                    continue
                frozen_by_pause[pause_id] = victim
                held_when_frozen[victim.name] = held
                say(f"paused {victim.name} holding {len(held)} claims")
                pause_began[victim.name] = time.monotonic()
                heapq.heappush(queue, Event(now + length, "thaw", pause_id))
            elif event.kind == "thaw":
                victim = frozen_by_pause.pop(event.arg, None)
                if victim is not None and victim.frozen:
                    stolen = taken_from(journal_url, held_when_frozen.get(victim.name, {}))
                    # With replicas, stay frozen (a few seconds more at most) until one has taken
                    # over a claim, so that the thawed one must meet a lost lease.
                    slept = time.monotonic() - pause_began[victim.name]
                    if (
                        len(daemons) > 1
                        and held_when_frozen.get(victim.name)
                        and not stolen
                        and slept < 12.0
                    ):
                        frozen_by_pause[event.arg] = victim
                        heapq.heappush(queue, Event(now + 0.3, "thaw", event.arg))
                        continue
                    held_when_frozen.pop(victim.name, None)
                    say(f"thawed {victim.name}: {len(stolen)} of its claims were taken over")
                    facts.lease_steals += len(stolen)
                    victim.thaw()
                    facts.pauses += 1
                    facts.longest_pause = max(
                        facts.longest_pause, time.monotonic() - pause_began[victim.name]
                    )
                last_heal = time.monotonic()
            elif event.kind == "storm":
                mocks.set(event.arg, drops=True)
                facts.storms[event.arg] += 1
                storm_began[event.arg] = (now, mocks.counters())
            elif event.kind == "calm":
                # A storm lasts its length and, within a bound, until the mocks have injected
                # its fault once: one that met no call (every daemon restarting) shows nothing.
                began, before = storm_began.get(event.arg, (now, {}))
                counter = STORM_COUNTER.get(event.arg)
                if (
                    counter is not None
                    and mocks.counters()[counter] <= before.get(counter, 0)
                    and now - began < STORM_STRETCH * settings.storm_seconds
                ):
                    heapq.heappush(queue, Event(now + 0.25, "calm", event.arg))
                    continue
                mocks.set(None, drops=True)
                last_heal = time.monotonic()
        for daemon in daemons:  # the schedule's time bound may have cut a pause short
            if daemon.frozen:
                daemon.thaw()
                facts.pauses += 1
                facts.longest_pause = max(
                    facts.longest_pause,
                    time.monotonic() - pause_began.get(daemon.name, time.monotonic()),
                )
        mocks.set(None, drops=False)
        last_heal = time.monotonic()
        facts.fault_seconds = last_heal - phase
        open_rows, parked = journal_open_and_parked(journal_url)
        facts.left_at_last_fault = max(open_rows, mocks.pending() - parked)
        say(
            f"faults healed after {facts.fault_seconds:.0f} s: {facts.kills} kills, "
            f"{facts.pauses} pauses, storms {dict(facts.storms)}; waiting for quiescence"
        )

        # 3. Quiescence, a clean stop, and the checker.
        facts.converge_seconds = wait_quiet(
            mocks, journal_url, settings.quiet_seconds, say, daemons
        )
        facts.exits = {d.name: d.stop(30) for d in daemons}
        # A late vendor applies what it received after the daemons stopped too: those effects
        # count (a duplicate among them is a duplicate), so the check waits for them.
        _wait_applied(sandbox, settings.late_delay + settings.late_jitter + 10.0, say)
        facts.injected = mocks.counters()
        seeded = baseline_ids | fault_ids
        times = final_times(sandbox.marketplace.url, fault_ids)
        fault_times = [times[r] for r in fault_ids if r in times]
        facts.fault_requests, facts.fault_rate = (
            len(fault_times),
            _rate(fault_times, since=fault_start_wall),
        )
        facts.elapsed = time.monotonic() - started
        report = check(sandbox, journal_url, seeded, facts)
        if not report.ok:
            say(f"invariants failed; details: {report.details}")
            keep_evidence(sandbox, journal_url, report, workdir, say)
        elif not settings.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return report


def _wait_applied(sandbox: Sandbox, seconds: float, say: Callable[[str], None]) -> None:
    """Until the mock vendor has applied every call it received (bounded by ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = requests.get(f"{sandbox.vendor.url}/admin/late", timeout=10).json()["pending"]
        if not pending:
            return
        time.sleep(0.2)
    due = min((p["due"] for p in pending), default=None)
    late = f" (the earliest due {due - time.time():+.1f} s from now)" if due else ""
    say(f"the mock vendor still had {len(pending)} calls to apply after {seconds:.0f} s{late}")


def _span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def parse_args(argv: list[str] | None = None) -> tuple[SoakSettings, argparse.Namespace]:
    d = SoakSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=d.requests, help="cancels seeded in all")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default=d.store)
    parser.add_argument(
        "--replicas", type=int, default=0, help="daemons (default 1 on SQLite, 3 on PostgreSQL)"
    )
    parser.add_argument(
        "--postgres-url",
        default=d.postgres_url,
        help="default: TEST_POSTGRES_URL or the local test db",
    )
    parser.add_argument(
        "--mode",
        choices=["key", "natural", "read", "none"],
        default=d.mode,
        help="what the mock vendor offers against ambiguity",
    )
    parser.add_argument("--concurrency", type=int, default=d.concurrency, help="workers per daemon")
    parser.add_argument("--lease-seconds", type=float, default=d.lease_seconds)
    parser.add_argument(
        "--baseline", type=int, default=0, help="fault-free batch (default a tenth, at least 30)"
    )
    parser.add_argument("--kills", type=int, default=d.kills, help="at most this many SIGKILLs")
    parser.add_argument(
        "--kill-every", type=_span, default=d.kill_every, help="seconds between kills, LOW:HIGH"
    )
    parser.add_argument(
        "--pauses", type=int, default=d.pauses, help="SIGSTOPs longer than the lease"
    )
    parser.add_argument("--storm-seconds", type=float, default=d.storm_seconds)
    parser.add_argument(
        "--fault-seconds",
        type=float,
        default=None,
        help="the schedule's time bound (default: fitted to the backlog from the fault-free rate)",
    )
    parser.add_argument(
        "--drop-rate", type=float, default=d.drop_rate, help="apply-then-drop share of POSTs"
    )
    parser.add_argument("--vendor-latency-ms", type=float, default=d.vendor_latency_ms)
    parser.add_argument("--market-latency-ms", type=float, default=d.market_latency_ms)
    parser.add_argument(
        "--quiet-seconds", type=float, default=d.quiet_seconds, help="bound on the final drain"
    )
    parser.add_argument(
        "--late-delay",
        type=float,
        default=d.late_delay,
        help="the mock vendor answers 504 and applies each call this many seconds later",
    )
    parser.add_argument("--late-jitter", type=float, default=d.late_jitter)
    parser.add_argument(
        "--async-delay",
        type=float,
        default=d.async_delay,
        help="the mock vendor answers 202 with an operation completed this many seconds later "
        "(plus up to as much again); 0: it answers at once",
    )
    parser.add_argument(
        "--apply-horizon", type=float, default=None, help="the adapter's apply_horizon (seconds)"
    )
    parser.add_argument("--workdir", help="keep the config, journal and daemon logs here")
    parser.add_argument("--markdown", help="also write the table, with the command, to this file")
    args = parser.parse_args(argv)
    settings = SoakSettings(
        requests=args.requests,
        seed=args.seed,
        store=args.store,
        replicas=args.replicas,
        postgres_url=args.postgres_url,
        mode=args.mode,
        concurrency=args.concurrency,
        lease_seconds=args.lease_seconds,
        baseline=args.baseline,
        kills=args.kills,
        kill_every=args.kill_every,
        pauses=args.pauses,
        storm_seconds=args.storm_seconds,
        fault_seconds=args.fault_seconds,
        drop_rate=args.drop_rate,
        vendor_latency_ms=args.vendor_latency_ms,
        market_latency_ms=args.market_latency_ms,
        quiet_seconds=args.quiet_seconds,
        workdir=args.workdir,
        late_delay=args.late_delay,
        late_jitter=args.late_jitter,
        apply_horizon=args.apply_horizon,
        async_delay=args.async_delay,
    )
    return settings, args


def _command(argv: list[str]) -> str:
    # The PostgreSQL URL may carry a password: it never goes into the printed command.
    shown, skip = [], False
    for arg in argv:
        if skip:
            shown.append("$URL")
            skip = False
        elif arg == "--postgres-url":
            shown.append(arg)
            skip = True
        elif arg.startswith("--postgres-url="):
            shown.append("--postgres-url=$URL")
        elif os.path.isabs(arg.partition("=")[2] if arg.startswith("--") else arg):
            # An absolute path names this machine: shown as PATH.
            shown.append(f"{arg.partition('=')[0]}=PATH" if arg.startswith("--") else "PATH")
        else:
            shown.append(arg)
    return " ".join(["python -m bench.soak", *map(shlex.quote, shown)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings, args = parse_args(argv)
    command = _command(argv)
    report = run_soak(settings, command)
    title = f"Soak: {settings.requests} requests, {settings.store}, vendor mode {settings.mode}"
    table = render_markdown(report, title)
    print(table)
    if args.markdown:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        Path(args.markdown).write_text(
            f"{table}\nProduced by `{command}` on {when}, {os.cpu_count()} CPU cores.\n",
            encoding="utf-8",
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
