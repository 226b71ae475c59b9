"""Where the CPU of ``cancel-processor run --once`` goes, as users run it.

Run: ``python -m bench.profile_users_run`` (needs ``py-spy``, which ``pip install -e '.[bench]'``
brings). The processor runs as in :mod:`bench.as_users_run` (the example configuration's
defaults, mocks in processes of their own, zero latency) under ``py-spy record --gil``, so only
samples holding the GIL count: Python CPU.
"Whole" is the share of samples with a frame of that kind anywhere on the stack, so those shares
overlap (a note's HTTP call counts under both "notes" and "HTTP"); "self" counts only samples whose
innermost Python frame is of that kind. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from bench.as_users_run import user_config
from bench.servers import VENDOR_TOKEN, MockServers
from cancel_sandbox.marketplace import DEFAULT_API_KEY

__all__ = ["CATEGORIES", "main", "shares"]

# (label, pattern on a frame "function (file:line)"); a sample counts once per label.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("HTTP (requests, urllib3, http.client, sockets)", r"\((requests|urllib3)/|\(http/client\.py"),
    ("notes (gateway post_note, whole)", r"\b(?:Marketplace|ConnectGateway)\.post_note \("),
    ("  messages read before a note", r"\._has_message \(|Notes\.has \("),
    ("  conversation look-up", r"\._conversation \(|Notes\.conversation \("),
    ("journal (processor/journal)", r"\(processor/journal/"),
    ("JSON from outside, read within limits (processor/json_text)", r"\(processor/json_text\.py"),
    ("proxies/netrc from the environment", r"merge_environment_settings|get_netrc_auth"),
    ("logging (structlog)", r"\(structlog/"),
    ("metrics (prometheus_client)", r"\(prometheus_client/"),
    ("retries (tenacity)", r"\(tenacity/"),
    ("runtime Protocol isinstance", r"_get_protocol_attrs|_ProtocolMeta"),
    ("connect-openapi-client", r"\(client/(fluent|mixins|models|rql|utils)"),
    ("vendor adapter (processor/adapters)", r"\(processor/adapters/"),
    ("start-up (imports)", r"_find_and_load \("),
)


def shares(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, and samples per category (whole, self), from py-spy's raw output."""
    total, whole, own = 0, Counter[str](), Counter[str]()
    patterns = [(label, re.compile(p)) for label, p in CATEGORIES]
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")
        for label, pattern in patterns:
            if any(pattern.search(frame) for frame in frames):
                whole[label] += int(n)
            if pattern.search(frames[-1]):
                own[label] += int(n)
    return total, whole, own


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--keep", type=Path, help="also copy py-spy's raw output to this file")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    script = Path(sys.executable).with_name("cancel-processor")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "processor"]
    env = {**os.environ, "CONNECT_API_KEY": DEFAULT_API_KEY, "VENDOR_API_TOKEN": VENDOR_TOKEN}
    with (
        MockServers(args.requests) as servers,
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
    ):
        work = Path(tmp)
        config = work / "processor.yaml"
        config.write_text(yaml.safe_dump(user_config(servers, work, args.concurrency)))
        raw = work / "profile.txt"
        with (work / "processor.log").open("wb") as log:
            subprocess.run(
                [spy, "record", "--gil", "--format", "raw", "-r", str(args.rate), "-o", str(raw)]
                + ["--", *argv, "run", "--once", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        if servers.pending():
            raise RuntimeError(f"{servers.pending()} requests left pending")
        total, whole, own = shares(raw)
        if args.keep is not None:
            shutil.copyfile(raw, args.keep)
    print(
        f"\n## Profile: `run --once`, example defaults, {args.requests} requests, "
        f"C={args.concurrency}, zero latency (py-spy --gil, {total} samples)\n"
    )
    print("| where | whole (any frame on the stack) | self (innermost frame) |")
    print("|---|---:|---:|")
    for label, _ in CATEGORIES:
        print(
            f"| {label} | {whole[label] / max(total, 1):.1%} | {own[label] / max(total, 1):.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
