"""Start-up cost: connect-openapi-client's help formatter is imported when it is first used, and
``inflect`` without typeguard's import-time instrumentation.

connect-openapi-client's ``ConnectClient`` builds a help formatter (``client.help()``, for an
interactive session), whose module imports ``inflect`` (and with it typeguard) and a Markdown
renderer (rich, markdown-it, commonmark): ~0.14 s of CPU at every start (a quarter of what a
``run --once`` costs before its first request), for a formatter the processor never calls.
:func:`defer_help_formatter` puts a stand-in for that module in place before the client is
imported: its ``DefaultFormatter`` keeps the client's specs and imports the real module on first
use, so ``client.help()`` still works. Nothing else of the client changes.

connect-openapi-client imports ``inflect`` (for its help formatter), and inflect 7 decorates its
functions with typeguard's ``@typechecked``, which re-parses and recompiles each of them at
import: 1.8 s of CPU for every process that talks to Connect (the CLI, every crash-test restart,
every replica). The decorator only adds runtime type checks, so importing inflect with it as a
pass-through changes no behaviour. The patch is undone right after inflect's import, so other
users of typeguard are unaffected; if inflect is already imported, nothing happens.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

_HELP_FORMATTER = "connect.client.help_formatter"


def quick_start() -> None:
    """Both of the module docstring's cuts, as importing :mod:`processor` does."""
    if not defer_help_formatter():
        import_inflect_quickly()


def defer_help_formatter() -> bool:
    """Put the stand-in for the client's help formatter module in place; False when the client
    (or the module) is imported already, and nothing is changed."""
    if _HELP_FORMATTER in sys.modules or "connect.client" in sys.modules:
        return False
    stand_in = types.ModuleType(_HELP_FORMATTER, "Imports the real module on first use.")
    stand_in.DefaultFormatter = _DeferredFormatter  # type: ignore[attr-defined]
    sys.modules[_HELP_FORMATTER] = stand_in
    return True


class _DeferredFormatter:
    """connect-openapi-client's ``DefaultFormatter``, built on first use."""

    def __init__(self, specs: Any) -> None:
        self._specs = specs
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            real = self._real = _real_help_formatter().DefaultFormatter(self._specs)
        return getattr(real, name)


@functools.cache
def _real_help_formatter() -> types.ModuleType:
    """The client's own help formatter module, loaded from its file (the stand-in keeps its name
    in ``sys.modules``)."""
    import connect.client

    import_inflect_quickly()
    spec = importlib.machinery.PathFinder.find_spec(_HELP_FORMATTER, connect.client.__path__)
    if spec is None or spec.loader is None:  # pragma: no cover - the client always ships it
        raise ImportError(f"cannot find {_HELP_FORMATTER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_inflect_quickly() -> None:
    if "inflect" in sys.modules:
        return
    try:
        import typeguard
    except ImportError:  # pragma: no cover - inflect without typeguard imports fast anyway
        return
    original = typeguard.typechecked

    def passthrough(target: Any = None, **_: Any) -> Any:
        return target if target is not None else (lambda function: function)

    typeguard.typechecked = passthrough
    try:
        import inflect  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    finally:
        typeguard.typechecked = original
