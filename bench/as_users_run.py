"""The processor as users run it, side by side with a bare loop, in one run.

Run: ``python -m bench.as_users_run`` (``--help`` for sizes). For each concurrency and round,
on fresh mocks in processes of their own (same seed, same latencies):

- **processor**: the installed ``cancel-processor run --once`` in a child process, configured by
  ``config/processor.example.yaml`` as shipped (processing, retry, log level and format, notes,
  status server) with only what must point at the mocks changed: the Connect endpoint, the
  vendor's base URL, the products, a fresh SQLite journal, a free status port, and the policy
  (the example's default policy schedules to the end of the period; here every request is
  terminated now, so both sides do the same work). Its log goes to a file, as under a supervisor.
- **bare loop** (``bench.bare_loop``): the same HTTP calls in a child process with threads and
  ``requests``; optionally the same through connect-openapi-client.
- with ``--compare LABEL=DIR`` (repeatable), the same processor command once more per round, its
  ``processor`` package imported from the source tree ``DIR`` (an earlier commit checked out
  there): before and after, measured in the same run against the same bare loop.

CPU is the child's user + system time read by ``wait4``, so both sides are measured alike. The
ideal is ``concurrency / (vendor latency + marketplace latency x Connect calls per request)``.
Nothing here asserts: it prints, and the README quotes what it printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.parity import differences, render
from bench.servers import VENDOR_TOKEN, MockServers
from cancel_sandbox.marketplace import DEFAULT_API_KEY

__all__ = ["Run", "bare", "main", "processor", "user_config"]

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "processor.example.yaml"


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    cpu: float  # child user + system seconds
    peak_rss_mb: float
    calls: dict[str, int] = field(default_factory=dict)  # what the mocks handled, by shape

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu / max(self.requests, 1) * 1000


def _child(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float, float]:
    """Run a child to the end: (exit code, wall seconds, cpu seconds, peak RSS MB)."""
    with log.open("wb") as out:
        t0 = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def user_config(
    servers: MockServers, workdir: Path, concurrency: int, notes: bool | None = None
) -> dict[str, Any]:
    """The example configuration as shipped, pointed at the mocks (``notes``: set, else as
    shipped)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    if notes is not None:
        data["processing"]["notes"] = notes
    data["connect"]["endpoint"] = servers.endpoint
    data["journal"]["url"] = f"sqlite:///{workdir}/journal.db"
    data["processing"]["concurrency"] = concurrency
    vendor = data["adapters"]["vendor"]["options"]
    vendor["base_url"] = servers.vendor_url
    data["defaults"]["environments"] = {}
    data["defaults"]["policy"] = "right_away"
    data["defaults"]["template"] = None
    data["rules"] = []
    data["products"] = {pid: {} for pid in servers.products()}
    data["http"]["port"] = 0  # the status server binds a port of its own choosing
    return data


def processor(
    servers: MockServers,
    concurrency: int,
    workdir: Path,
    source: Path | None = None,
    notes: bool | None = None,
) -> Run:
    """``cancel-processor run --once`` to the end; ``source``: a tree to import ``processor``
    from."""
    workdir = Path(tempfile.mkdtemp(prefix="processor-", dir=workdir))  # a fresh journal each run
    config = workdir / "processor.yaml"
    config.write_text(yaml.safe_dump(user_config(servers, workdir, concurrency, notes)))
    script = Path(sys.executable).with_name("cancel-processor")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "processor"]
    env = {**os.environ, "CONNECT_API_KEY": DEFAULT_API_KEY, "VENDOR_API_TOKEN": VENDOR_TOKEN}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    expected = servers.pending()
    servers.traffic(reset=True)  # from here on, only the processor's calls
    log = workdir / "processor.log"
    code, elapsed, cpu, rss = _child([*argv, "run", "--once", "--config", str(config)], env, log)
    calls = servers.traffic()
    left = servers.pending()
    if code != 0 or left:
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"processor run failed: exit {code}, {left} left pending\n{tail}")
    return Run(expected, elapsed, cpu, rss, calls)


def probe_path() -> str | None:
    """The vendor path the example's adapter probes at start, as the bare loop must read it too."""
    options = yaml.safe_load(EXAMPLE.read_text())["adapters"]["vendor"]["options"]
    probe = options.get("probe")
    if not probe:
        return None
    status = options.get("status")
    path = str(
        status.get("path") if isinstance(status, dict) else "/v1/subscriptions/{subscription_id}"
    )
    return path.replace("{subscription_id}", str(probe["subscription_id"]))


def bare(servers: MockServers, concurrency: int, workdir: Path, client: str, notes: bool) -> Run:
    argv = [
        sys.executable,
        "-m",
        "bench.bare_loop",
        "--endpoint",
        servers.endpoint,
        "--api-key",
        DEFAULT_API_KEY,
        "--vendor-url",
        servers.vendor_url,
        "--vendor-token",
        VENDOR_TOKEN,
        "--concurrency",
        str(concurrency),
        "--client",
        client,
        "--products",
        ",".join(servers.products()),
    ]
    probe = probe_path()
    argv += ["--probe", probe] if probe else []
    log = workdir / f"bare-{client}.log"
    servers.traffic(reset=True)
    code, elapsed, cpu, rss = _child(
        [*argv, *(["--notes"] if notes else [])], dict(os.environ), log
    )
    calls = servers.traffic()
    if code != 0:
        raise RuntimeError(
            f"bare loop failed: exit {code}\n{log.read_text(errors='replace')[-1500:]}"
        )
    done = json.loads(log.read_text().strip().splitlines()[-1])["done"]
    return Run(done, elapsed, cpu, rss, calls)


def side_by_side(
    n: int,
    concurrency: int,
    market_ms: float,
    vendor_ms: float,
    clients: tuple[str, ...],
    variants: dict[str, Path | None],
    notes: bool,
) -> dict[str, Run]:
    """One round: each side on fresh mocks, bare first then each processor variant."""
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-users-") as tmp:
        for client in clients:
            with MockServers(n, market_ms, vendor_ms) as servers:
                runs[f"bare-{client}"] = bare(servers, concurrency, Path(tmp), client, notes)
        for label, source in variants.items():
            with MockServers(n, market_ms, vendor_ms) as servers:
                runs[label] = processor(servers, concurrency, Path(tmp), source, notes)
    return runs


def variants(args: argparse.Namespace) -> dict[str, Path | None]:
    """The processor runs of each round: this tree's, then each ``--compare LABEL=DIR``."""
    found: dict[str, Path | None] = {"processor": None}
    for item in args.compare or ():
        label, _, source = item.partition("=")
        if not label or not source or not Path(source, "processor").is_dir():
            raise SystemExit(f"--compare {item!r}: expected LABEL=DIR, DIR holding processor/")
        found[f"processor ({label})"] = Path(source).resolve()
    return found


def _sum(runs: list[Run]) -> Run:
    calls: Counter[str] = Counter()
    for r in runs:
        calls.update(r.calls)
    return Run(
        sum(r.requests for r in runs),
        sum(r.seconds for r in runs),
        sum(r.cpu for r in runs),
        max(r.peak_rss_mb for r in runs),
        dict(calls),
    )


def unlike(run: Run, baseline: Run) -> str | None:
    """Why ``run`` and ``baseline`` may not be compared (the calls that differ), or None."""
    diff = differences(run.calls, baseline.calls)
    return render(diff) if diff else None


def throughput(args: argparse.Namespace) -> None:
    for notes in args.notes:
        _throughput(args, notes)


def _throughput(args: argparse.Namespace, notes: bool) -> None:
    calls = 3 if notes else 1  # approve, and with notes: find the conversation, post the message
    print(
        f"\n## As users run it: marketplace {args.market_latency_ms:.0f} ms, vendor "
        f"{args.vendor_latency_ms:.0f} ms, {args.rounds} interleaved rounds, "
        f"notes {'on' if notes else 'off'}\n"
    )
    print(
        "| concurrency | run | requests | req/s | bare loop req/s | / bare | ideal req/s "
        "| / ideal | bare / ideal | CPU ms/req | bare CPU ms/req | CPU ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = variants(args)
    refused: list[str] = []
    for concurrency in args.concurrency:
        n = max(100, concurrency * args.per_worker)
        rounds = [
            side_by_side(
                n,
                concurrency,
                args.market_latency_ms,
                args.vendor_latency_ms,
                ("requests",),
                names,
                notes,
            )
            for _ in range(args.rounds)
        ]
        b = _sum([r["bare-requests"] for r in rounds])
        ideal = concurrency / ((args.vendor_latency_ms + calls * args.market_latency_ms) / 1000)
        for name in names:
            p = _sum([r[name] for r in rounds])
            why = unlike(p, b)
            if why is not None:  # different work: no ratio
                refused.append(f"C={concurrency} {name}: {why}")
                print(
                    f"| {concurrency} | {name} | {p.requests} | {p.rate:.1f} | {b.rate:.1f} | "
                    "calls differ | | | | | | |"
                )
                continue
            print(
                f"| {concurrency} | {name} | {p.requests} | {p.rate:.1f} | {b.rate:.1f} | "
                f"{p.rate / b.rate:.2f} | {ideal:.1f} | {p.rate / ideal:.2f} | "
                f"{b.rate / ideal:.2f} | {p.cpu_ms:.2f} | {b.cpu_ms:.2f} | "
                f"{p.cpu_ms / b.cpu_ms:.2f} |",
                flush=True,
            )
    print(
        "\nEach side's calls, counted by the mocks: "
        + ("equal in every row." if not refused else "DIFFERENT, no ratio: " + " | ".join(refused))
    )


def cpu(args: argparse.Namespace) -> None:
    """Whole-run CPU per request, and the marginal cost: (CPU at 2n - CPU at n) / n, which leaves
    out what a run pays once (interpreter start, imports, opening the journal)."""
    n, runs = args.cpu_requests, variants(args)
    names = ("bare-requests", "bare-openapi", *runs)
    sizes: dict[int, dict[str, Run]] = {}
    for size in (n, 2 * n):
        rounds = [
            side_by_side(size, 8, 0, 0, ("requests", "openapi"), runs, args.notes[0])
            for _ in range(args.rounds)
        ]
        sizes[size] = {name: _sum([r[name] for r in rounds]) for name in names}
    whole = {name: sizes[2 * n][name].cpu_ms for name in names}
    marginal = {
        name: (sizes[2 * n][name].cpu - sizes[n][name].cpu)
        / max(sizes[2 * n][name].requests - sizes[n][name].requests, 1)
        * 1000
        for name in names
    }
    print(
        f"\n## CPU per request at zero latency, concurrency 8, {n} and {2 * n} requests "
        f"x {args.rounds} rounds\n"
    )
    print(
        "| run (child process) | CPU ms/request, whole run of 2n | marginal CPU ms/request | "
        "marginal ratio to bare requests | marginal ratio to bare openapi-client |"
    )
    print("|---|---:|---:|---:|---:|")
    labels = {
        "bare-requests": "bare loop, requests",
        "bare-openapi": "bare loop, connect-openapi-client",
        "processor": "cancel-processor run --once, example defaults",
    }
    refused = []
    for name in names:
        why = [
            unlike(sizes[size][name], sizes[size][bare])
            for size in sizes
            for bare in ("bare-requests", "bare-openapi")
        ]
        if any(why):
            refused.append(f"{name}: {next(w for w in why if w)}")
            print(
                f"| {labels.get(name, name)} | {whole[name]:.2f} | {marginal[name]:.2f} | "
                "calls differ | calls differ |"
            )
            continue
        print(
            f"| {labels.get(name, name)} | {whole[name]:.2f} | {marginal[name]:.2f} | "
            f"{marginal[name] / marginal['bare-requests']:.2f} | "
            f"{marginal[name] / marginal['bare-openapi']:.2f} |"
        )
    print(
        "\nEach side's calls, counted by the mocks: "
        + ("equal in every row." if not refused else "DIFFERENT, no ratio: " + " | ".join(refused))
    )


def backlog(args: argparse.Namespace) -> None:
    print("\n## Backlog, `cancel-processor run --once` as shipped (child process, zero latency)\n")
    print("| backlog | seconds | ms/request | peak RSS MB |")
    print("|---:|---:|---:|---:|")
    rows = []
    for n in (args.backlog // 10, args.backlog):
        with MockServers(n) as servers, tempfile.TemporaryDirectory(prefix="bench-users-") as tmp:
            r = processor(servers, 8, Path(tmp))
        rows.append(r)
        print(
            f"| {n} | {r.seconds:.1f} | {r.seconds / r.requests * 1000:.2f} | "
            f"{r.peak_rss_mb:.0f} |",
            flush=True,
        )
    small, large = rows
    ratio = (large.seconds / large.requests) / (small.seconds / small.requests)
    print(
        f"\nTime per request, {large.requests} vs {small.requests}: ratio {ratio:.2f} "
        "(1.00 is flat)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32, 64]
    )
    parser.add_argument(
        "--per-worker", type=int, default=40, help="requests per worker in each round"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--notes",
        type=lambda v: [{"on": True, "off": False}[x] for x in v.split(",")],
        default=[False, True],
        help="notes configurations to run, e.g. off,on (the CPU table takes the first)",
    )
    parser.add_argument("--market-latency-ms", type=float, default=50)
    parser.add_argument("--vendor-latency-ms", type=float, default=100)
    parser.add_argument("--cpu-requests", type=int, default=1500)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--only", choices=["throughput", "cpu", "backlog"], action="append")
    parser.add_argument(
        "--compare",
        action="append",
        metavar="LABEL=DIR",
        help="also run the processor imported from the source tree DIR (throughput and cpu)",
    )
    args = parser.parse_args()
    for part in args.only or ["throughput", "cpu", "backlog"]:
        {"throughput": throughput, "cpu": cpu, "backlog": backlog}[part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
