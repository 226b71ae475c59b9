"""The in-process benchmark report: runs the throughput benchmarks and writes
docs/benchmarks-in-process.md and docs/throughput.png (docs/benchmarks.md holds what
``bench.as_users_run`` measures, the product as users run it).
Run: ``python -m bench.report [--quick]`` (the plot needs the ``bench`` extra).

It calls the benchmark modules' own functions (bench/processor_throughput.py, bench/replicas.py),
so each table is what the module's command prints, and says which command that is:

1. a concurrency sweep at set latencies (marketplace 50 ms, vendor 100 ms), against the ideal
   ``concurrency / (vendor + approve latency)``; the plot shows it with the ideal line;
2. zero latency: the processor's CPU per request against a bare loop making the same HTTP calls;
3. the legacy connect-sdk FulfillmentAutomation on the same servers (skipped, with the reason, when
   its virtualenv cannot be built here);
4. 1, 2 and 4 replicas on one PostgreSQL journal (skipped, with the reason, without PostgreSQL).

Nothing here asserts; every figure is a measurement of this run on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import processor_throughput as throughput
from bench import replicas as replica_bench
from bench.checker import git_commit
from processor.observe import configure_logging

__all__ = ["FULL", "QUICK", "Plan", "build_report", "main", "plot_sweep"]

DOCS = Path(__file__).resolve().parents[1] / "docs"


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    per_worker: int
    market_ms: float
    vendor_ms: float
    cpu_requests: int
    legacy_requests: int
    replicas: tuple[int, ...]
    replica_concurrency: int
    replica_per_worker: int


FULL = Plan((1, 4, 8, 16, 32), 30, 50.0, 100.0, 3000, 300, (1, 2, 4), 8, 40)
QUICK = Plan((1, 4, 16), 10, 50.0, 100.0, 500, 100, (1, 2), 4, 10)


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def sweep_section(plan: Plan) -> tuple[list[str], list[throughput.SweepRow]]:
    rows = throughput.sweep_rows(
        list(plan.concurrency), plan.per_worker, plan.market_ms, plan.vendor_ms
    )
    lines = [
        f"## Concurrency sweep: marketplace {plan.market_ms:.0f} ms, vendor {plan.vendor_ms:.0f} "
        "ms",
        "",
        (
            "`python -m bench.processor_throughput --only sweep --concurrency "
            f"{_csv(plan.concurrency)} --per-worker {plan.per_worker} --market-latency-ms "
            f"{plan.market_ms:.0f} --vendor-latency-ms {plan.vendor_ms:.0f}` (mocks in processes "
            "of their own, SQLite journal; ideal = concurrency / (vendor latency + approve "
            "latency))"
        ),
        "",
        "| concurrency | requests | seconds | requests/s | ideal/s | ratio to ideal |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.concurrency} | {r.requests} | {r.seconds:.2f} | {r.rate:.1f} | {r.ideal:.1f} | "
        f"{r.ratio:.2f} |"
        for r in rows
    ]
    return lines, rows


def cpu_section(plan: Plan) -> list[str]:
    r = throughput.cpu_cost_result(plan.cpu_requests)
    return [
        f"## CPU per request at zero latency: concurrency {r.concurrency}, {plan.cpu_requests} "
        "requests",
        "",
        f"`python -m bench.processor_throughput --only cpu --cpu-requests {plan.cpu_requests}`",
        "",
        "| run | requests | CPU ms/request | ratio to bare loop |",
        "|---|---:|---:|---:|",
        f"| bare loop (the same HTTP calls; no journal, retries or logs) | {r.bare_requests} | "
        f"{r.bare_cpu_ms:.2f} | 1.00 |",
        f"| processor (journal, retries, logs, metrics) | {r.requests} | {r.cpu_ms:.2f} | "
        f"{r.ratio:.2f} |",
        "",
        f"Processor wall time {r.seconds:.2f} s ({r.requests / r.seconds:.0f} requests/s).",
    ]


def legacy_section(plan: Plan) -> list[str]:
    concurrencies = [1, max(plan.concurrency)]
    head = [
        (
            f"## Legacy SDK baseline: {plan.legacy_requests} requests, marketplace "
            f"{plan.market_ms:.0f} ms, vendor {plan.vendor_ms:.0f} ms"
        ),
        "",
        (
            "`python -m bench.processor_throughput --only legacy --legacy-requests "
            f"{plan.legacy_requests} --concurrency {_csv(plan.concurrency)}`"
        ),
        "",
    ]
    r = throughput.legacy_result(
        plan.legacy_requests, plan.market_ms, plan.vendor_ms, concurrencies
    )
    if isinstance(r, str):
        return [*head, f"Not measured on this run: {r}"]
    lines = [
        *head,
        "| client | requests/s | ratio to legacy |",
        "|---|---:|---:|",
        "| connect-sdk FulfillmentAutomation (approves only, calls no vendor) | "
        f"{r.legacy_rate:.1f} | 1.00 |",
    ]
    lines += [
        f"| this processor, concurrency {c} (vendor call + approve) | {rate:.1f} | "
        f"{rate / r.legacy_rate:.2f} |"
        for c, rate in r.processor_rates.items()
    ]
    return lines


def replicas_section(plan: Plan, postgres_url: str) -> list[str]:
    per_request = (plan.market_ms + plan.vendor_ms) / 1000
    head = [
        f"## Replicas on one PostgreSQL journal: concurrency {plan.replica_concurrency} per "
        "replica",
        "",
        (
            f"`python -m bench.replicas --replicas {_csv(plan.replicas)} --concurrency "
            f"{plan.replica_concurrency} --per-worker {plan.replica_per_worker}` (ideal = "
            "replicas x concurrency / (vendor + approve latency); CPU cores busy counts the "
            "replicas and the mocks, not PostgreSQL)"
        ),
        "",
    ]
    try:
        import psycopg

        with psycopg.connect(postgres_url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return [
            *head,
            f"Not measured on this run: PostgreSQL is not reachable ({type(exc).__name__}).",
        ]
    lines = [
        *head,
        "| replicas | requests | approved | approvals/s | ideal/s | ratio to ideal | wall s | CPU "
        "cores busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in plan.replicas:
        r = replica_bench.run(
            postgres_url,
            n,
            plan.replica_concurrency,
            plan.replica_per_worker,
            plan.market_ms,
            plan.vendor_ms,
            timeout=300,
        )
        ideal = n * plan.replica_concurrency / per_request
        lines.append(
            f"| {r.replicas} | {r.requests} | {r.approved} | {r.rate:.1f} | {ideal:.1f} | "
            f"{r.rate / ideal:.2f} | {r.wall:.1f} | {r.cores:.2f} |"
        )
    return lines


def plot_sweep(rows: list[throughput.SweepRow], plan: Plan, path: Path) -> None:
    """requests/s against concurrency, measured and ideal."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    x = [r.concurrency for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(
        x,
        [r.ideal for r in rows],
        "--",
        color="grey",
        label="ideal: concurrency / (vendor + approve latency)",
    )
    ax.plot(x, [r.rate for r in rows], "o-", color="tab:blue", label="measured")
    for r in rows:
        ax.annotate(
            f"{r.ratio:.2f}",
            (r.concurrency, r.rate),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    # Log on both axes: the ideal is a straight line, and the gap to it reads the same at every
    # scale.
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(x, [str(c) for c in x])
    ticks = [
        2**k
        for k in range(12)
        if min(r.rate for r in rows) / 2 <= 2**k <= max(r.ideal for r in rows) * 2
    ]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("concurrency (worker threads)")
    ax.set_ylabel("requests/s (labels: ratio to ideal)")
    ax.set_title(
        f"Throughput: marketplace {plan.market_ms:.0f} ms, vendor {plan.vendor_ms:.0f} ms "
        f"({os.cpu_count()} cores)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(
    plan: Plan,
    command: str,
    postgres_url: str,
    docs: Path,
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Path:
    started = time.monotonic()
    docs.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmarks",
        "",
        (
            f"Produced by `{command}` on {when}, commit {git_commit()}, on a machine with "
            f"{os.cpu_count()} CPU cores (the mocks, the processor and PostgreSQL share them). "
            "Ratios matter more than absolute figures."
        ),
        "",
    ]
    say("sweep")
    sweep_lines, rows = sweep_section(plan)
    lines += [*sweep_lines, "", "![requests/s against concurrency](throughput.png)", ""]
    plot_sweep(rows, plan, docs / "throughput.png")
    say("cpu cost")
    lines += [*cpu_section(plan), ""]
    say("legacy baseline")
    lines += [*legacy_section(plan), ""]
    say("replicas")
    lines += [*replicas_section(plan, postgres_url), ""]
    lines.append(f"Whole report: {time.monotonic() - started:.0f} s.")
    out = docs / "benchmarks-in-process.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer points and requests (a minute or two)"
    )
    parser.add_argument("--postgres-url", default=replica_bench.DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--docs",
        type=Path,
        default=DOCS,
        help="where benchmarks-in-process.md and throughput.png go",
    )
    args = parser.parse_args(argv)
    configure_logging("error", "json")
    command = "python -m bench.report" + (" --quick" if args.quick else "")
    out = build_report(QUICK if args.quick else FULL, command, args.postgres_url, args.docs)
    print(out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
