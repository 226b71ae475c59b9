"""``python -m processor.mock.vendor``: the same as ``cancel-processor mock-vendor``."""

import argparse
import sys

from processor.mock.vendor.cli import configure_parser, run

_parser = argparse.ArgumentParser(prog="python -m processor.mock.vendor")
configure_parser(_parser)
sys.exit(run(_parser.parse_args()))
