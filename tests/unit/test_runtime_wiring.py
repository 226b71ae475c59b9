"""The one wiring of a runtime (daemon, --once, EaaS): what it builds, and what a failed start
closes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processor.adapters.base import Idempotency, Terminated, VendorCall
from processor.config.schema import Config, ConfigError
from processor.daemon.runtime import assemble, build_runtime
from processor.journal.base import SchemaError
from processor.observe import Metrics

from ..fakes import FakeMarketplace

CLOSED: list[str] = []  # the adapters closed, by configured name, across a test


class ClosingAdapter:
    """An adapter that says when it is closed; ``fail: true`` makes its construction fail."""

    idempotency = Idempotency.KEY

    def __init__(self, options: dict[str, Any]) -> None:
        if options.get("fail"):
            raise RuntimeError("cannot start")
        self.name = "closing"

    def terminate(self, call: VendorCall) -> Terminated:
        return Terminated("ok")

    def close(self) -> None:
        CLOSED.append(self.name)


SPEC = f"{__name__}:ClosingAdapter"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CLOSED.clear()


def config_for(tmp_path: Path, **adapters: dict[str, Any]) -> Config:
    return Config.model_validate(
        {
            "journal": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            "adapters": adapters or {"a": {"type": SPEC}},
            "defaults": {"adapter": next(iter(adapters or {"a": None}))},
            "products": {"PRD-100-100-100": {"template": "TL-100-100-100"}},
        }
    )


def test_a_schema_the_journal_lacks_closes_the_adapters_and_builds_no_gateway(tmp_path):
    built: list[Metrics] = []

    def gateway(metrics: Metrics) -> Any:
        built.append(metrics)
        return FakeMarketplace()

    with pytest.raises(SchemaError):
        assemble(config_for(tmp_path), gateway, migrate=False)
    assert CLOSED == ["a"] and built == []


def test_a_gateway_that_fails_closes_the_adapters(tmp_path):
    def gateway(metrics: Metrics) -> Any:
        raise RuntimeError("no gateway")

    with pytest.raises(RuntimeError, match="no gateway"):
        assemble(config_for(tmp_path), gateway)
    assert CLOSED == ["a"]


def test_an_adapter_that_fails_to_load_closes_those_loaded_before_it(tmp_path):
    config = config_for(
        tmp_path, a={"type": SPEC}, b={"type": SPEC}, c={"type": SPEC, "options": {"fail": True}}
    )
    with pytest.raises(ConfigError, match="adapters.c"):
        build_runtime(config, environ={"CONNECT_API_KEY": "key"})
    assert sorted(CLOSED) == ["a", "b"]


def test_the_cli_wiring_builds_one_engine_on_the_same_objects_and_closes_them(tmp_path):
    runtime = build_runtime(config_for(tmp_path), environ={"CONNECT_API_KEY": "key"})
    try:
        engine = runtime.engine
        assert engine.journal is runtime.journal and engine.marketplace is runtime.marketplace
        assert engine.metrics is runtime.metrics and engine.leases is runtime.leases
        assert engine.adapters == runtime.adapters and runtime.leases is not None
    finally:
        runtime.close()
    assert CLOSED == ["a"]


def test_a_malformed_journal_url_is_a_config_error_only_where_it_was(tmp_path):
    config = config_for(tmp_path).model_copy(
        update={"journal": config_for(tmp_path).journal.model_copy(update={"url": "sqlite:///"})}
    )
    with pytest.raises(ValueError, match="malformed SQLite journal URL"):
        assemble(config, lambda metrics: FakeMarketplace())  # type: ignore[arg-type,return-value]
    assert CLOSED == ["a"]
    with pytest.raises(ConfigError, match="journal.url"):
        assemble(config, lambda m: FakeMarketplace(), url_as_config_error=True)  # type: ignore[arg-type,return-value]
    assert CLOSED == ["a", "a"]
