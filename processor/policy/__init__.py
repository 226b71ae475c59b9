"""Cancellation policies: which rule matches a request, and the dates it sets."""
