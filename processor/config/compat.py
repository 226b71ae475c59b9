"""The pydantic names the configuration models use, on pydantic 2 and on pydantic 1.10.

Why: every released connect-extension-runner (43.x) needs connect-eaas-core 37.x, which pins
pydantic ``<2``; the processor installs beside it, so its models must work on both lines. On
pydantic 2 this module re-exports pydantic's own names unchanged. On pydantic 1.10 it provides the
small part of the pydantic 2 API the processor uses, built on pydantic 1's own machinery:

- ``BaseModel`` with ``model_validate``, ``model_dump`` and ``model_copy``, and
  a ``model_config = ConfigDict(...)`` class attribute read as pydantic 1's ``class Config``;
- ``field_validator(*fields, mode="after"|"before")`` as ``validator`` (``pre`` for ``before``);
- ``model_validator(mode="after")`` on an instance method as a root validator that runs the
  method on the validated values (the method only checks; models are frozen).

Validation messages differ slightly between the lines (pydantic 1 has no ``input`` in its error
dicts, and words some messages differently); the keys and meanings are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pydantic

__all__ = [
    "PYDANTIC_2",
    "BaseModel",
    "ConfigDict",
    "Field",
    "ValidationError",
    "field_validator",
    "model_validator",
]

PYDANTIC_2 = int(pydantic.VERSION.split(".", 1)[0]) >= 2

# Type checkers read the pydantic 2 names (what development installs): the pydantic 1 branch
# redefines them in its own terms, which only the runner's environment exercises.
if TYPE_CHECKING or PYDANTIC_2:
    from pydantic import (
        BaseModel,
        ConfigDict,
        Field,
        ValidationError,
        field_validator,
        model_validator,
    )
else:  # pragma: no cover - the connect-extension-runner environment (tests/eaas_in_runner.py)
    from pydantic import Field, ValidationError, root_validator, validator
    from pydantic.main import ModelMetaclass

    def ConfigDict(**settings: Any) -> dict[str, Any]:  # noqa: N802 - pydantic 2's name
        return dict(settings)

    class _Metaclass(ModelMetaclass):
        def __new__(
            mcs,
            name: str,
            bases: tuple[type, ...],
            namespace: dict[str, Any],  # noqa: N804
            **kwargs: Any,
        ) -> Any:
            settings = namespace.pop("model_config", None)
            if settings:
                # pydantic 1 reads class keyword arguments as Config entries (extra, frozen, ...).
                kwargs = {**settings, **kwargs}
            return super().__new__(mcs, name, bases, namespace, **kwargs)

    class BaseModel(pydantic.BaseModel, metaclass=_Metaclass):  # type: ignore[no-redef]
        @classmethod
        def model_validate(cls, data: Any) -> Any:
            return cls.parse_obj(data)

        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            return self.dict(**kwargs)

        def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
            return self.copy(update=update, deep=deep)

    def field_validator(*fields: str, mode: str = "after") -> Callable[[Any], Any]:  # type: ignore[no-redef]
        return validator(*fields, pre=(mode == "before"), allow_reuse=True)

    def model_validator(*, mode: str) -> Callable[[Any], Any]:  # type: ignore[no-redef]
        if mode != "after":
            raise NotImplementedError(
                "only model_validator(mode='after') is provided on pydantic 1"
            )

        def decorate(method: Callable[[Any], Any]) -> Any:
            def check(cls: Any, values: dict[str, Any]) -> dict[str, Any]:
                method(cls.construct(**values))
                return values

            check.__name__ = check.__qualname__ = getattr(method, "__name__", "model_validator")
            return root_validator(skip_on_failure=True, allow_reuse=True)(check)

        return decorate
