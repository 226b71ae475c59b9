"""Vendor-side processor for CloudBlue Connect subscription cancellations."""

from processor._startup import quick_start

__version__ = "0.1.0"

quick_start()
