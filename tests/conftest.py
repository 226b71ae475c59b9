"""Shared fixtures. Helpers that only one test module uses live in that module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.journal import open_journal
from processor.journal.base import Journal

from .fakes import Clock

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def need_or_skip(reason: str) -> None:
    """Skip on a developer's machine; fail loudly in CI, where every service must be present."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL server (TEST_POSTGRES_URL, default the local test database)."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        need_or_skip(f"PostgreSQL is not reachable ({type(exc).__name__}: {exc})")
    return url


@pytest.fixture(autouse=True)
def _working_directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """In-process tests run in a directory of their own: files a default configuration puts in
    the working directory (the guard's latches, a default SQLite journal) never leak from one
    test into the next, nor into the checkout. Process tests choose their directories."""
    if "process" in request.node.keywords:
        yield
        return
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand (modules with clocks of another kind define their own)."""
    return Clock()


@pytest.fixture
def journal(clock: Clock) -> Iterator[Journal]:
    """A migrated in-memory SQLite journal on ``clock``."""
    store = open_journal("sqlite:///:memory:", clock=clock)
    store.migrate()
    yield store
    store.close()


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """../shared/reference, present in CI beside the clone."""
    path = SHARED / "reference"
    if not path.is_dir():
        need_or_skip("../shared/reference is absent")
    return path


TIERS = ("unit", "integration", "process")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries its tier's marker, taken from its folder, so ``pytest -m unit`` (or
    ``-m "not process"``) selects a tier without anyone remembering to mark a new file."""
    for item in items:
        tests = REPO / "tests"
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


def pytest_configure(config: pytest.Config) -> None:
    # Tests that look at log events capture them (structlog.testing.capture_logs, which needs
    # every level let through); the rest would only bury pytest's own report.
    from processor.observe import configure_logging

    configure_logging("debug", "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the session


@pytest.fixture(autouse=True)
def _logging_config_restored() -> Iterator[None]:
    """Code under test may configure logging for a process (the EaaS runtime does, as the daemon
    does at start-up); the next test must still see the session's configuration."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
