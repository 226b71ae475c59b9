"""The README's "Operating" section says what the code does: its metrics table is the one
generated from Metrics, its picture exists, and every command it shows parses with the CLI."""

from __future__ import annotations

import shlex

from processor.cli.main import build_parser
from processor.ops.metrics_doc import metrics_table

from ..conftest import REPO


def _section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Operating\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_metrics_table_is_generated_from_the_metrics_class() -> None:
    assert metrics_table() in _section()


def test_the_status_page_picture_exists() -> None:
    assert (
        "(docs/status-page.png)" in _section()
        and (REPO / "docs" / "status-page.png").stat().st_size > 10_000
    )


def test_every_command_shown_parses() -> None:
    shown = [
        line.split("#")[0].split(">")[0].strip()
        for line in _section().splitlines()
        if line.startswith("cancel-processor ")
    ]
    assert len(shown) == 9  # proceed among them
    for line in shown:
        argv = shlex.split(line)[1:]
        args = build_parser(argv).parse_args(argv)
        assert callable(args.func), line
