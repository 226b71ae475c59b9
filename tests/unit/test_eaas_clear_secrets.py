"""CANCEL_PROCESSOR_CONFIG_YAML is a non-secure variable (shown on Connect's environment page,
logged by ``cextrun -d``): a YAML in it that holds a secret in clear text is refused, naming the
key and never the value, at setup and at every task."""

from __future__ import annotations

import logging

import pytest
import yaml

from processor.config.schema import ConfigError
from processor.eaas.app import CancelEventsApplication
from processor.eaas.variables import CONFIG_YAML, JOURNAL_URL, clear_secrets, config_from_variables

SECRET = "s3cr3t-value-42"


def adapter(**options: object) -> dict[str, object]:
    return {"adapters": {"vendor": {"type": "http", "options": {
        "base_url": "https://vendor.example.com", "auth": {"type": "bearer", "env": "TOKEN"},
        **options}}}}  # fmt: skip


OPTIONS = "adapters.vendor.options"
CASES = [
    ({"journal": {"url": f"postgresql://cancel:{SECRET}@db.example.com/cancel"}}, "journal.url"),
    (adapter(base_url=f"https://user:{SECRET}@vendor.example.com"), f"{OPTIONS}.base_url"),
    (adapter(headers={"X-Api-Key": SECRET}), f"{OPTIONS}.headers.X-Api-Key"),
    (adapter(auth={"type": "bearer", "token": SECRET}), f"{OPTIONS}.auth.token"),
    (adapter(auth={"type": "oauth2", "client_secret": SECRET}), f"{OPTIONS}.auth.client_secret"),
]


@pytest.mark.parametrize(("data", "key"), CASES)
def test_a_secret_in_clear_in_the_yaml_variable_is_refused_by_key(
    data: dict[str, object], key: str
) -> None:
    assert clear_secrets(data) == [key]
    with pytest.raises(ConfigError) as refused:
        config_from_variables({CONFIG_YAML: yaml.safe_dump(data)}, environ={})
    message = str(refused.value)
    assert CONFIG_YAML in message and key in message and JOURNAL_URL in message
    assert SECRET not in message


def test_references_to_secrets_and_plain_urls_are_accepted() -> None:
    data = {
        "journal": {"url": "postgresql://cancel@db.example.com/cancel"},
        "connect": {"api_key_env": "CONNECT_API_KEY", "verify": "/etc/ssl/ca.pem"},
        **adapter(headers={"X-Tenant": "acme"}, base_url="https://vendor.example.com:8443/v1"),
    }
    assert clear_secrets(data) == []
    assert clear_secrets({"journal": {"url": "sqlite:////data/journal.db"}}) == []


def test_setup_logs_the_refusal_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.eaas.startup")
    yaml_text = yaml.safe_dump({"journal": {"url": f"postgresql://u:{SECRET}@h/db"}})
    with caplog.at_level(logging.ERROR, logger=logger.name):
        CancelEventsApplication.on_startup(logger, {CONFIG_YAML: yaml_text})
        CancelEventsApplication.on_startup(logger, {CONFIG_YAML: "# nothing yet"})
    assert [r.getMessage() for r in caplog.records if "journal.url" in r.getMessage()]
    assert len(caplog.records) == 1
    assert all(SECRET not in r.getMessage() for r in caplog.records)
