"""Writing a file only its owner may read, never through a symbolic link.

:func:`write_private` writes into a new file beside the target (``mkstemp``: created exclusively,
mode 0600, never through a link) and renames it over the target: a link at the target is replaced,
not followed, and a failed write leaves no half file. ``journal export -o`` does the same.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as a new 0600 file, without following a link there."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
