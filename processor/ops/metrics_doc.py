"""The metrics list of the README, generated from :class:`processor.observe.Metrics` itself, so the
documentation names exactly what ``/metrics`` serves. ``python -m processor.ops.metrics_doc``
prints the Markdown table; a test checks that the README holds it unchanged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from processor.observe import Metrics

__all__ = ["metrics_rows", "metrics_table"]


def metrics_rows() -> list[tuple[str, str, str, str]]:
    """(name as scraped, type, labels, meaning) for every collector, in registration order."""
    rows = []
    metrics = Metrics(CollectorRegistry())
    for collector in vars(metrics).values():
        describe = getattr(collector, "describe", None)
        if describe is None or collector is metrics.registry:
            continue
        family = describe()[0]
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in getattr(collector, "_labelnames", ()))
        rows.append((name, family.type, labels, family.documentation))
    return rows


def metrics_table() -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{name}` | {kind} | {labels} | {meaning} |"
        for name, kind, labels, meaning in metrics_rows()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(metrics_table())
