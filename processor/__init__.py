"""Vendor-side processor for CloudBlue Connect subscription cancellations."""

from processor._startup import import_inflect_quickly

__version__ = "0.1.0"

import_inflect_quickly()
