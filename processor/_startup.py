"""Start-up cost: import ``inflect`` without typeguard's import-time instrumentation.

connect-openapi-client imports ``inflect`` (for its help formatter), and inflect 7 decorates its
functions with typeguard's ``@typechecked``, which re-parses and recompiles each of them at
import: 1.8 s of CPU for every process that talks to Connect (the CLI, every crash-test restart,
every replica). The decorator only adds runtime type checks, so importing inflect with it as a
pass-through changes no behaviour. The patch is undone right after inflect's import, so other
users of typeguard are unaffected; if inflect is already imported, nothing happens.
"""

from __future__ import annotations

import sys
from typing import Any


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
