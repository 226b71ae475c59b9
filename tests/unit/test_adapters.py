"""The adapter registry (entry points, module:Class, and every way loading can fail), the noop
adapter, and the package's public surface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import processor.adapters as adapters
from processor.adapters import (
    AdapterError,
    Idempotency,
    NoopAdapter,
    Terminated,
    VendorCall,
    available_adapters,
    base,
    has_status_read,
    load_adapter,
    supports,
)
from processor.model import CancelRequest

CALL = VendorCall(
    request=CancelRequest(
        id="PR-1",
        type="cancel",
        status="pending",
        asset_id="AS-1",
        product_id="PRD-1",
        environment="preview",
    ),
    subscription_id="SUB-1",
    idempotency_key="PR-1:1:terminate",
)


# Adapters that tests load by module:Class. Each is a small, deliberate misfit.


class EchoAdapter:
    idempotency = Idempotency.NATURAL

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.name = "echo"
        self.options = options

    def terminate(self, call: VendorCall) -> Terminated:
        return Terminated(f"echo {call.subscription_id}")


class PickyAdapter(EchoAdapter):
    def __init__(self, options: Mapping[str, Any]) -> None:
        raise ValueError("region must be eu or us")


class NoTerminate:
    idempotency = Idempotency.KEY

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.name = "no-terminate"


class StringIdempotency(EchoAdapter):
    idempotency = "key"  # type: ignore[assignment]


class FixedName:
    idempotency = Idempotency.KEY

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    @property
    def name(self) -> str:
        return "fixed"

    def terminate(self, call: VendorCall) -> Terminated:
        return Terminated()


# -- registry ------------------------------------------------------------------------------------


def test_the_built_in_adapters_are_installed_entry_points() -> None:
    assert {"http", "noop"} <= set(available_adapters())
    assert available_adapters() == sorted(available_adapters())


def test_an_entry_point_name_loads_the_adapter_under_its_configured_name() -> None:
    adapter = load_adapter("noop", {}, name="preview")
    assert isinstance(adapter, NoopAdapter)
    assert adapter.name == "preview"  # the engine keys circuit breakers and metrics by it


def test_without_a_configured_name_the_adapter_keeps_its_own() -> None:
    assert load_adapter("noop", {}).name == "noop"
    assert load_adapter("http", {"base_url": "http://127.0.0.1:1"}).name == "http"


def test_module_and_class_loads_an_unpackaged_adapter_with_a_copy_of_its_options() -> None:
    options = {"region": "eu"}
    adapter = load_adapter("tests.unit.test_adapters:EchoAdapter", options, name="vendor")
    assert isinstance(adapter, EchoAdapter)
    assert adapter.options == {"region": "eu"} and adapter.options is not options
    assert adapter.name == "vendor"
    assert adapter.terminate(CALL) == Terminated("echo SUB-1")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(AdapterError) as error:
        load_adapter("stripe", {}, name="vendor")
    known = ", ".join(available_adapters())
    assert str(error.value) == f"unknown adapter 'stripe'; known: {known}; or use 'module:Class'"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "no_such_package.adapters:Vendor",
            "cannot import 'no_such_package.adapters': ModuleNotFoundError",
        ),
        ("processor.adapters.noop:Missing", "'processor.adapters.noop' has no attribute 'Missing'"),
        (":Vendor", "expected 'package.module:ClassName'"),
        ("processor.adapters.noop:", "expected 'package.module:ClassName'"),
        ("processor.adapters.http:TEMPLATE_FIELDS", "is a tuple, not a class"),
    ],
)
def test_a_bad_import_names_the_adapter_and_the_problem(spec: str, expected: str) -> None:
    with pytest.raises(AdapterError) as error:
        load_adapter(spec, {}, name="vendor")
    assert str(error.value).startswith(f"adapter 'vendor' ({spec}): ")
    assert expected in str(error.value)


def test_bad_options_name_the_adapter_and_the_option_key() -> None:
    with pytest.raises(AdapterError) as error:
        load_adapter("noop", {"colour": "blue"}, name="preview")
    assert str(error.value) == (
        "adapter 'preview' (noop): option 'colour': unknown option; "
        "the noop adapter takes no options"
    )
    with pytest.raises(AdapterError) as error:
        load_adapter("http", {"base_url": "ftp://vendor.example.com"}, name="vendor")
    assert str(error.value).startswith(
        "adapter 'vendor' (http): option 'base_url': expected a http or https URL"
    )


def test_options_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(AdapterError, match="options must be a mapping, got list"):
        load_adapter("noop", ["x"], name="preview")  # type: ignore[arg-type]


def test_any_constructor_error_becomes_an_adapter_error() -> None:
    with pytest.raises(AdapterError) as error:
        load_adapter("tests.unit.test_adapters:PickyAdapter", {}, name="vendor")
    assert "construction failed: ValueError: region must be eu or us" in str(error.value)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        ("NoTerminate", "NoTerminate has no terminate(call) method"),
        (
            "StringIdempotency",
            "idempotency must be an Idempotency member (key, natural, none), got 'key'",
        ),
        ("FixedName", "'name' must be a writable attribute"),
    ],
)
def test_an_object_that_does_not_satisfy_the_protocol_is_refused(cls: str, expected: str) -> None:
    with pytest.raises(AdapterError) as error:
        load_adapter(f"tests.unit.test_adapters:{cls}", {}, name="vendor")
    assert expected in str(error.value)


# -- noop ----------------------------------------------------------------------------------------


def test_noop_approves_every_step_without_a_status_read() -> None:
    adapter = NoopAdapter({})
    assert adapter.terminate(CALL) == Terminated("noop")
    assert adapter.suspend(CALL) == Terminated("noop")
    assert adapter.purge(CALL) == Terminated("noop")
    assert adapter.idempotency is Idempotency.KEY  # repeating nothing is harmless
    assert not has_status_read(adapter)
    assert supports(adapter, "suspend") and supports(adapter, "purge")
    assert isinstance(adapter, base.VendorAdapter)


# -- public surface ------------------------------------------------------------------------------


def test_the_public_surface_resolves_and_includes_the_protocol_module() -> None:
    for name in adapters.__all__:
        assert getattr(adapters, name) is not None, name
    assert set(base.__all__) <= set(adapters.__all__)
    assert adapters.HttpAdapter.__module__ == "processor.adapters.http.call"
    with pytest.raises(AttributeError):
        adapters.NoSuchThing  # noqa: B018
