"""extension/ is a Connect extension project that connect-eaas-core's own validators accept.

The validators run as ``cextrun`` runs them before it starts (connect-extension-runner's
``validate_extension``): in order, each adding to a shared context, stopping at one that says so.
What the runner asks Connect for (the event definitions; its own latest version) is given here,
without network. The suite runs this module with connect-eaas-core 38 and, in the runner's
virtualenv (tests/process/test_eaas_runner_env.py), with 37.4.
"""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from connect.eaas.core.validation.validators import get_validators

from processor.eaas.app import EVENT_TYPE, CancelEventsApplication
from tests.conftest import REPO

PROJECT = REPO / "extension"
RUNNER_TAG = "43.1"  # the connect-extension-runner release the image tag names
RUNNER_IMAGE = f"cloudblueconnect/connect-extension-runner:{RUNNER_TAG}"
# Connect's definition of the event, as the DevOps API lists it.
DEFINITIONS = {
    EVENT_TYPE: {
        "type": EVENT_TYPE,
        "object_statuses": ["pending", "approved", "failed", "scheduled", "revoking", "revoked"],
    }
}


def validate(project_dir: Path) -> tuple[list[str], list[Any]]:
    """The validators' names in the order run, and every item they reported."""
    context: dict[str, Any] = {
        "runner_version": RUNNER_TAG,
        "project_dir": str(project_dir),
        "event_definitions": DEFINITIONS,
    }
    ran, items = [], []
    for validator in get_validators():
        result = validator(context=context)
        ran.append(validator.__name__)
        items.extend(result.items)
        if result.must_exit:
            break
        if result.context:
            context.update(result.context)
    return ran, items


def test_every_validator_of_connect_eaas_core_passes_on_the_extension_project(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran, items = validate(PROJECT)
    with capsys.disabled():
        print(f"\nconnect-eaas-core {version('connect-eaas-core')} validators on extension/:")
        for name in ran:
            print(f"  {name}: ok" if not items else f"  {name}")
        for item in items:
            print(f"  {item.level}: {item.message} ({item.file})")
    assert [(item.level, item.message) for item in items] == []
    assert ran == [v.__name__ for v in get_validators()]  # none stopped the run
    assert {
        "validate_pyproject_toml",
        "validate_docker_compose_yml",
        "validate_extension_json",
        "validate_eventsapp",
        "validate_variables",
    } <= set(ran)


def test_a_wrong_runner_tag_is_caught_by_the_validators(tmp_path: Path) -> None:
    """The check above can fail: the same project with another image tag does not pass."""
    for name in ("pyproject.toml", "docker-compose.yml"):
        (tmp_path / name).write_text((PROJECT / name).read_text(encoding="utf-8"), encoding="utf-8")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        compose.read_text(encoding="utf-8").replace(RUNNER_IMAGE, f"{RUNNER_IMAGE}.9"),
        encoding="utf-8",
    )
    _, items = validate(tmp_path)
    assert any(item.level == "ERROR" and "Invalid image" in item.message for item in items)


def test_the_project_is_laid_out_as_connects_bootstrap_makes_one() -> None:
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    poetry = pyproject["tool"]["poetry"]
    assert poetry["plugins"]["connect.eaas.ext"] == {
        "eventsapp": "processor.eaas.app:CancelEventsApplication"
    }
    # The processor comes from this repository, never from an index.
    assert poetry["dependencies"]["connect-cancel-processor"] == {"path": "..", "develop": True}
    assert "connect-extension-runner" not in poetry["dependencies"]
    assert poetry["dependencies"]["connect-eaas-core"] == ">=37.4,<38"

    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))
    images = {service["image"] for service in compose["services"].values()}
    assert images == {RUNNER_IMAGE}
    for service in compose["services"].values():
        assert (
            service["environment"]["EXTENSION_DIR"] == "/src/extension"
            and "..:/src" in service["volumes"]
        )
        assert service["env_file"] == [".cancel_processor_dev.env"]
    template = (PROJECT / ".cancel_processor_dev.env.template").read_text(encoding="utf-8")
    assert {
        line.split("=", 1)[0] for line in template.splitlines() if line and not line.startswith("#")
    } == {"API_KEY", "ENVIRONMENT_ID", "SERVER_ADDRESS"}
    assert (
        ".cancel_processor_dev.env" in (PROJECT / ".gitignore").read_text(encoding="utf-8").split()
    )

    # One descriptor: extension/extension.json is the application's own.
    assert (
        json.loads((PROJECT / "extension.json").read_text(encoding="utf-8"))
        == CancelEventsApplication.get_descriptor()
    )
