"""The extension's variables the local DevOps hub hands the runner, as Connect's environment page
would: read from a YAML file (``--devops-variables``, see config/devops.variables.example.yaml).

Each top-level key is a variable name; its value is either a string (a plain variable) or a
mapping with exactly one of ``value`` (the text), ``env`` (the name of an environment variable of
the mock's process holding the text: secrets stay out of the file) or ``from_mock:
approve_templates`` (the mock's own products and their approve templates, as the JSON object
``CANCEL_PROCESSOR_APPROVE_TEMPLATES`` reads), and optionally ``secure: true``. Errors name the
variable and the key; the value of a secure variable never appears in one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Variable", "VariablesError", "load_variables"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SOURCES = ("value", "env", "from_mock")


class VariablesError(ValueError):
    """The variables file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Variable:
    name: str
    value: str = field(repr=False)
    secure: bool = False

    def message(self) -> dict[str, Any]:
        """The variable as the setup response carries it."""
        return {"name": self.name, "value": self.value, "secure": self.secure}


def load_variables(
    path: str | Path, approve_templates: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> list[Variable]:
    """The variables the file at ``path`` describes (see the module docstring)."""
    where = f"devops variables {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise VariablesError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise VariablesError(f"{where}: not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise VariablesError(f"{where}: expected a mapping of variable name to value")
    env = os.environ if environ is None else environ
    return [_variable(where, name, spec, approve_templates, env) for name, spec in data.items()]


def _variable(
    where: str, name: Any, spec: Any, templates: Mapping[str, str], env: Mapping[str, str]
) -> Variable:
    if not isinstance(name, str) or not _NAME.match(name):
        raise VariablesError(f"{where}: {name!r} is not a variable name (letters, digits, _)")
    if isinstance(spec, str):
        return Variable(name, spec)
    if isinstance(spec, (bool, int, float)):
        # YAML reads yes, 30 or 1.5 as a boolean or a number; Connect's variables are text.
        raise VariablesError(f"{where}: {name}: expected a string: quote the value")
    if not isinstance(spec, dict):
        raise VariablesError(f"{where}: {name}: expected a string or a mapping")
    unknown = set(spec) - {*_SOURCES, "secure"}
    sources = [key for key in _SOURCES if key in spec]
    if unknown or len(sources) != 1:
        raise VariablesError(
            f"{where}: {name}: expected exactly one of value, env, from_mock (and secure); "
            f"got {', '.join(sorted(map(str, spec)))}"
        )
    secure = spec.get("secure", False)
    if not isinstance(secure, bool):
        raise VariablesError(f"{where}: {name}.secure: expected true or false")
    source, raw = sources[0], spec[sources[0]]
    if source == "value":
        if not isinstance(raw, str):
            raise VariablesError(f"{where}: {name}.value: expected a string")
        return Variable(name, raw, secure)
    if source == "env":
        if not isinstance(raw, str) or not env.get(raw):
            raise VariablesError(f"{where}: {name}.env: the environment variable {raw} is not set")
        return Variable(name, env[raw], secure)
    if raw != "approve_templates":
        raise VariablesError(f"{where}: {name}.from_mock: only approve_templates is known")
    return Variable(name, json.dumps(dict(sorted(templates.items()))), secure)
