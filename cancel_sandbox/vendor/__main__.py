"""``python -m cancel_sandbox.vendor``: the same as ``cancel-processor mock-vendor``."""

import argparse
import sys

from cancel_sandbox.vendor.cli import configure_parser, run

_parser = argparse.ArgumentParser(prog="python -m cancel_sandbox.vendor")
configure_parser(_parser)
sys.exit(run(_parser.parse_args()))
