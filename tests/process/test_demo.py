"""``cancel-processor demo`` as a newcomer runs it, in its own process with its own temporary
directory: it says what preview approvals are (so "approved" and "effective terminations" add up),
prints the mocks' URLs only when ``--serve`` keeps them up, and leaves nothing behind unless
``--keep`` asks, and then says where.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

CLI = str(Path(sys.executable).with_name("cancel-processor"))


def _environ(tmp: Path) -> dict[str, str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    return {**environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _demo(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "demo", "--requests", "16", *extra],
        env=_environ(tmp),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _left(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("cancel-processor-demo-*"))


def test_the_demo_explains_preview_approvals_and_leaves_nothing(tmp_path: Path) -> None:
    result = _demo(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # rich wraps long lines
    found = re.search(
        r"approved (\d+) = (\d+) terminated at the vendor \+ (\d+) preview approvals", out
    )
    assert found, out[-3000:]
    approved, terminated, previews = (int(g) for g in found.groups())
    assert approved == terminated + previews and previews > 0
    effective = re.search(r"effective terminations (\d+)", out)
    assert effective and int(effective.group(1)) == terminated
    assert "without a vendor call" in out
    assert "http://127.0.0.1" not in out  # no URL of a server that is gone when it exits
    assert "--serve" in out
    assert _left(tmp_path) == []


def test_keep_leaves_the_files_and_says_where(tmp_path: Path) -> None:
    result = _demo(tmp_path, "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    left = _left(tmp_path)
    assert len(left) == 1 and (left[0] / "journal.db").is_file()
    assert str(left[0]) in "".join(result.stdout.split()), result.stdout[-2000:]


def test_serve_keeps_the_mocks_up_until_interrupted(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [CLI, "demo", "--requests", "8", "--serve"],
        env=_environ(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:  # bounded: the demo prints a few dozen lines, then waits
            seen.append(line)
            if "press Ctrl-C" in line:
                break
            assert len(seen) < 500, "".join(seen)
        text = "".join(seen)
        urls = re.findall(r"Mock marketplace\S*\s+(http://127\.0\.0\.1:\d+)", text)
        assert urls, text
        assert requests.get(f"{urls[0]}/healthz", timeout=10).status_code == 200
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert _left(tmp_path) == []


def test_the_demo_plays_each_vendor_shape(tmp_path: Path) -> None:
    """``--vendor oauth|mtls|rate|async``: the mock vendor plays the shape of
    config/processor.*.yaml, and the last line reads the mock's own ledger: tokens renewed, calls
    taken over mutual TLS, no 429, polls and no terminate sent twice."""
    expected = {
        "oauth": r"OAuth2: ([2-9]|\d\d+) token\(s\) issued, each living 1 s",
        "mtls": r"mutual TLS: the vendor takes calls only with a client certificate .* calls it "
        r"took: [1-9]\d*",
        "rate": r"rate limit 10/s: answers 429 from the vendor: 0\b",
        "async": r"asynchronous: \d+ polls; .* terminate calls sent twice: 0\b",
    }
    for shape, line in expected.items():
        done = _demo(tmp_path, "--vendor", shape, "--requests", "40")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Invariants hold." in done.stdout
        assert re.search(line, " ".join(done.stdout.split())), (shape, done.stdout[-1500:])
