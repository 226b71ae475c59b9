"""Configuration: the example loads, the environment overrides, bad files name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.config.schema import ConfigError, connect_api_key, load_config

from ..conftest import REPO

EXAMPLE = REPO / "config" / "processor.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "processor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_example_is_valid() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.adapter_for("PRD-123-456-789", "production") == "vendor"
    assert config.adapter_for("PRD-123-456-789", "preview") == "preview"
    assert config.adapter_for("PRD-987-654-321", "test") == "preview"
    assert config.adapter_for("PRD-000-000-000", "production") is None
    assert config.template_for("PRD-123-456-789") == "TL-123-456-789"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "processing:\n  concurrency: 4\n")
    config = load_config(
        path,
        environ={
            "CANCEL_PROCESSOR_PROCESSING__CONCURRENCY": "16",
            "CANCEL_PROCESSOR_JOURNAL__URL": "postgresql://db/x",
            "CONNECT_ENDPOINT": "http://127.0.0.1:1/public/v1/",
        },
    )
    assert config.processing.concurrency == 16
    assert config.journal.url == "postgresql://db/x"
    assert config.connect.endpoint == "http://127.0.0.1:1/public/v1"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("processing:\n  concurrency: many\n", "processing.concurrency", "valid integer"),
        ("processing:\n  concurency: 3\n", "processing.concurency", "unknown key"),
        ("journal:\n  url: mysql://x\n", "journal.url", "sqlite:///path or postgresql://"),
        ("processing:\n  poison: explode\n", "processing.poison", "'park' or 'fail'"),
        ("products:\n  PRD-1:\n    adapter: ghost\n", "", "adapter 'ghost' is not defined"),
    ],
)
def test_bad_values_name_the_file_the_key_and_the_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(str(path))
    assert key in message
    assert expected in message


def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "processing:\n  concurrency: [1,\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config(path, environ={})


def test_api_key_from_env_or_file_never_from_the_yaml(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("ApiKey SU-1:from-file\n")
    config = load_config(write(tmp_path, f"connect:\n  api_key_file: {secret_file}\n"), environ={})
    assert connect_api_key(config, environ={}) == "ApiKey SU-1:from-file"
    assert (
        connect_api_key(config, environ={"CONNECT_API_KEY": "ApiKey SU-2:env"}) == "ApiKey SU-2:env"
    )
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "connect:\n  api_key: ApiKey SU-1:inline\n"), environ={})
