"""Like for like: a ratio between the processor and its baseline means something only if both
made the same calls for the same work.

Each side runs on fresh mocks; :class:`bench.servers.MockServers` reads what each mock handled
(:mod:`cancel_sandbox.traffic`), by method and path shape. :func:`differences` names every shape
whose count differs; ``bench.as_users_run`` prints those instead of a ratio, and
``tests/process/test_bench_parity.py`` holds the two sides equal in every configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["differences", "render"]


def differences(
    processor: Mapping[str, int], baseline: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """``{shape: (processor's count, baseline's count)}`` for each shape counted differently."""
    return {
        shape: (processor.get(shape, 0), baseline.get(shape, 0))
        for shape in sorted({*processor, *baseline})
        if processor.get(shape, 0) != baseline.get(shape, 0)
    }


def render(diff: Mapping[str, tuple[int, int]]) -> str:
    """One line per differing call: ``METHOD path: processor N, baseline M``."""
    return "; ".join(f"{shape}: processor {p}, baseline {b}" for shape, (p, b) in diff.items())
