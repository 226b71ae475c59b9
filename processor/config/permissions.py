"""Who may change the configuration: nobody but its owner, as ssh demands of a key file.

The configuration can load code (an adapter named ``module:Class``) and send the vendor's token to
any ``base_url``: whoever can write the file, or replace it in its directory, runs code as the
processor and reads its secrets. So a configuration file writable by group or others is refused,
and so is one in a directory writable by group or others (they could replace it), unless that
directory has the sticky bit (``/tmp``-like: others cannot replace a file they do not own). A
symbolic link is judged by the file it leads to and by the directories of both.

To accept such a file knowingly (a shared development box, a volume whose permissions cannot be
changed): ``cancel-processor --allow-writable-config ...`` or
``CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG=1``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ALLOW_ENV", "writable_by_others"]

ALLOW_ENV = "CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG"
_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None  # unreadable: reading the file reports it in its own words


def writable_by_others(path: str | os.PathLike[str], environ: Mapping[str, str]) -> str | None:
    """Why the configuration at ``path`` may be changed by someone else, or None (also when
    ``environ`` holds ``CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG=1``)."""
    if environ.get(ALLOW_ENV, "").strip() == "1":
        return None
    named = Path(path)
    real = Path(os.path.realpath(named))
    mode = _mode(real)
    if mode is None or not stat.S_ISREG(mode):
        return None  # a pipe or a device (-c /dev/stdin): nothing on disk to replace or rewrite
    if mode & _OTHERS:
        return _why(f"the file {real}", mode)
    for directory in dict.fromkeys([named.absolute().parent, real.parent]):
        mode = _mode(directory)
        if mode is not None and mode & _OTHERS and not mode & stat.S_ISVTX:
            return _why(f"its directory {directory}", mode)
    return None


def _why(what: str, mode: int) -> str:
    who = " and ".join(
        name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit
    )
    return (
        f"{what} is writable by {who} (mode {stat.S_IMODE(mode):04o}), and the configuration can "
        f"load code and direct secrets: run chmod go-w on it, or accept it knowingly with "
        f"--allow-writable-config ({ALLOW_ENV}=1)"
    )
