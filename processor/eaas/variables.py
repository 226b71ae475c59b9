"""The extension's variables, and the processor :class:`Config` they describe.

Connect keeps an extension's settings as *variables* (plain or secure) and hands them to every task
as ``self.config``; connect-extension-runner does not export them to the process environment. The
processor is configured from them like this:

- ``CANCEL_PROCESSOR_CONFIG_YAML``: the whole processor YAML configuration (the same file as
  ``cancel-processor run --config``), or ``CANCEL_PROCESSOR_CONFIG``: the path of that file inside
  the extension's image. Neither: built-in defaults.
- Any ``CANCEL_PROCESSOR_<SECTION>__<KEY>`` variable overrides one setting, exactly as the
  environment does for the CLI. ``CANCEL_PROCESSOR_JOURNAL__URL`` is the one that matters: it is
  declared *secure* because a PostgreSQL URL carries a password.
- ``CANCEL_PROCESSOR_APPROVE_TEMPLATES``: a JSON object ``{"PRD-...": "TL-..."}``, the approve
  template per product (variable names cannot hold a product id). A product listed here is
  configured even if the YAML does not name it; the YAML's template for it is replaced.
- Secrets a vendor adapter reads from an environment variable (``auth: {env: NAME}``) come from
  the variable ``NAME``: :func:`export_adapter_secrets` copies exactly those into ``os.environ``
  before the adapters are built. ``VENDOR_API_TOKEN`` is declared (secure) as the conventional one.

``CANCEL_PROCESSOR_CONFIG_YAML`` is not secure: Connect's environment page shows it and ``cextrun
-d`` logs it in clear text. A YAML in it that holds a secret -- a password in a URL, a value under
a key such as ``password``, ``token`` or ``client_secret``, a credential-like static header -- is
refused with a :class:`ConfigError` naming the key (never the value), at setup
(:meth:`~processor.eaas.app.CancelEventsApplication.on_startup` logs it) and at every task. Put
the secret in a secure variable instead (``CANCEL_PROCESSOR_JOURNAL__URL``, the variable an
adapter's ``auth: {env: NAME}`` names).

Variables win over the process environment. A variable whose value is empty, or still the
``<unset...>`` placeholder it was declared with, counts as unset (the runner creates every declared
variable, with its initial value, on the first run).

- ``CANCEL_PROCESSOR_SQLITE_PERSISTENT``: ``yes`` lets the extension keep its journal in SQLite.
  By default it refuses (:func:`check_deployable`): a runner container's disk goes away with the
  container, and with it the record of which subscriptions were already terminated; use
  PostgreSQL, or say ``yes`` when the file is on a volume that outlives the container.

Failure modes: an unreadable or invalid configuration raises :class:`ConfigError` naming the
variable (or file), the key and what was expected; values of secure variables never appear in it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from processor.config.compat import ValidationError
from processor.config.schema import ENV_PREFIX, Config, ConfigError, load_config
from processor.observe import register_secret

__all__ = [
    "UNSET",
    "CONFIG_YAML",
    "CONFIG_PATH",
    "JOURNAL_URL",
    "APPROVE_TEMPLATES",
    "VENDOR_TOKEN",
    "SQLITE_PERSISTENT",
    "DECLARED",
    "NotConfigured",
    "effective",
    "check_deployable",
    "config_from_variables",
    "export_adapter_secrets",
    "clear_secrets",
]

CONFIG_YAML = "CANCEL_PROCESSOR_CONFIG_YAML"
CONFIG_PATH = "CANCEL_PROCESSOR_CONFIG"  # the same name the CLI reads the config path from
JOURNAL_URL = f"{ENV_PREFIX}JOURNAL__URL"
APPROVE_TEMPLATES = "CANCEL_PROCESSOR_APPROVE_TEMPLATES"
VENDOR_TOKEN = "VENDOR_API_TOKEN"
SQLITE_PERSISTENT = "CANCEL_PROCESSOR_SQLITE_PERSISTENT"

# A value starting with this is a declared placeholder, not a setting.
UNSET = "<unset"

# What ``@variables`` declares: created with these initial values when absent. Connect wants a
# non-empty string, so optional ones start as a placeholder that counts as unset.
DECLARED: list[dict[str, Any]] = [
    {"name": name, "initial_value": initial, "secure": secure}
    for name, initial, secure in (
        (CONFIG_YAML, "# the processor YAML configuration (see the README)", False),
        (CONFIG_PATH, f"{UNSET}: or the path of the YAML configuration in the image>", False),
        (JOURNAL_URL, f"{UNSET}: or postgresql://user:password@host/database>", True),
        (APPROVE_TEMPLATES, "{}", False),
        (VENDOR_TOKEN, f"{UNSET}: the vendor API token, if the YAML names it>", True),
        (
            SQLITE_PERSISTENT,
            f"{UNSET}: yes if a SQLite journal is on a volume that outlives the container>",
            False,
        ),
    )
]
_SECURE = frozenset(v["name"] for v in DECLARED if v["secure"])

# What a secret in clear text looks like in a processor YAML (see the module docstring).
_SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "client_secret", "token", "access_token", "refresh_token",
     "api_key", "apikey", "private_key", "key_password"}
)  # fmt: skip
_CREDENTIAL_HEADER = re.compile(r"authorization|token|secret|passw|api[-_]?key|cookie", re.I)
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:[^@\s/]+@")


def effective(variables: Mapping[str, Any] | None) -> dict[str, str]:
    """The variables that are set: string values; empty ones and placeholders dropped."""
    values = {str(k): str(v).strip() for k, v in (variables or {}).items() if v is not None}
    return {k: v for k, v in values.items() if v and not v.startswith(UNSET)}


class NotConfigured(ConfigError):
    """No product is configured yet: an installation nobody has set up (not an error to fix now)."""


def check_deployable(config: Config, variables: Mapping[str, Any] | None) -> None:
    """Raise :class:`NotConfigured` when no product is configured, :class:`ConfigError` for a
    SQLite journal that nobody said is on a persistent volume (see the module docstring)."""
    if not config.products:
        raise NotConfigured(
            config.source,
            "products",
            f"no product is configured yet (set {CONFIG_YAML} "
            f"or {APPROVE_TEMPLATES} on the extension's environment page)",
        )
    persistent = effective(variables).get(SQLITE_PERSISTENT, "").lower() in {"yes", "true", "1"}
    if config.journal.url.startswith("sqlite") and not persistent:
        raise ConfigError(
            config.source,
            "journal.url",
            "a SQLite journal on the container's disk is lost with "
            f"the container: set {JOURNAL_URL} to a PostgreSQL URL, or {SQLITE_PERSISTENT}=yes "
            "if the file is on a persistent volume",
        )


def config_from_variables(
    variables: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """The processor configuration the variables describe (see the module docstring)."""
    values = effective(variables)
    for name in _SECURE & values.keys():
        register_secret(values[name])
    env = {**(os.environ if environ is None else environ), **values}
    if CONFIG_YAML in values and not _blank_yaml(values[CONFIG_YAML]):
        config = _load_text(values[CONFIG_YAML], env)
    elif values.get(CONFIG_PATH):
        config = load_config(values[CONFIG_PATH], env)
    else:
        config = load_config(None, env)
    templates = values.get(APPROVE_TEMPLATES)
    return _with_templates(config, templates) if templates else config


def export_adapter_secrets(config: Config, variables: Mapping[str, Any] | None) -> list[str]:
    """Copy into ``os.environ`` the variables that adapter options name with an ``env`` key (the
    adapters read their secrets from the environment when they are built). Returns the names."""
    values = effective(variables)
    exported = []
    for spec in config.adapters.values():
        for name in sorted(set(_env_names(spec.options))):
            if name in values:
                register_secret(values[name])
                os.environ[name] = values[name]
                exported.append(name)
    return exported


def clear_secrets(data: Any, path: str = "") -> list[str]:
    """The keys (dotted paths) of ``data``, a parsed processor YAML, that hold a secret in clear
    text: a password in a URL, a value under a secret-named key, a credential-like header."""
    found: list[str] = []
    items = (
        data.items()
        if isinstance(data, Mapping)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    in_headers = path.rsplit(".", 1)[-1] == "headers"
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(value, str) and value:
            named = str(key).lower() in _SECRET_KEYS
            header = in_headers and bool(_CREDENTIAL_HEADER.search(str(key)))
            if _URL_PASSWORD.search(value) or named or header:
                found.append(where)
        else:
            found += clear_secrets(value, where)
    return found


def _refuse_clear_secrets(text: str) -> None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # load_config says what is wrong with it, where
    keys = clear_secrets(data)
    if keys:
        raise ConfigError(
            f"variable {CONFIG_YAML}",
            keys[0],
            "holds a secret in clear text (a non-secure variable is shown on the environment "
            "page and printed by `cextrun -d`): move it to a secure variable, e.g. "
            f"{JOURNAL_URL} for the journal URL, or the variable an adapter's "
            "auth: {env: NAME} names" + (f" (also at {', '.join(keys[1:])})" if keys[1:] else ""),
        )


def _blank_yaml(text: str) -> bool:
    """Only comments and blank lines: the initial value, not a configuration."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _load_text(text: str, environ: Mapping[str, str]) -> Config:
    # load_config reads a file; a private temporary one keeps this module on its public API. Errors
    # are renamed after the variable: the temporary path means nothing to the operator.
    source = f"variable {CONFIG_YAML}"
    _refuse_clear_secrets(text)
    with tempfile.TemporaryDirectory(prefix="cancel-processor-") as folder:
        path = Path(folder) / "processor.yaml"
        path.touch(mode=0o600)  # whatever the umask: load_config refuses a file others may write
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path, environ)
        except ConfigError as exc:
            raise ConfigError(source, exc.key, exc.problem) from None
    return config.model_copy(update={"source": source})


def _with_templates(config: Config, text: str) -> Config:
    source = f"variable {APPROVE_TEMPLATES}"
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ConfigError(source, "", f"not valid JSON: {exc.msg} ({where})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
        expected = 'a JSON object of product id to template id, e.g. {"PRD-1": "TL-1"}'
        raise ConfigError(source, "", f"expected {expected}")
    data = config.model_dump()
    products = data.setdefault("products", {})
    for product_id, template in mapping.items():
        products[product_id] = {**products.get(product_id, {}), "template": template}
    try:
        merged = Config.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(
            str(p) for p in error.get("loc", ()) if p != "__root__"
        )  # pydantic 1's model-level loc
        problem = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ConfigError(source, key, problem) from None
    return merged.model_copy(update={"source": config.source})


def _env_names(options: Any) -> Iterator[str]:
    """Every string value under a key named ``env`` in an adapter's options, at any depth."""
    if isinstance(options, Mapping):
        for key, value in options.items():
            if key == "env" and isinstance(value, str):
                yield value
            else:
                yield from _env_names(value)
    elif isinstance(options, (list, tuple)):
        for value in options:
            yield from _env_names(value)
