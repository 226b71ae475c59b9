"""Vendor-side processor for CloudBlue Connect subscription cancellations."""

__version__ = "0.1.0"
