"""The ``http`` adapter: a vendor's REST API, described by options instead of code.

Four modules, one subject each:

- :mod:`.settings`: every option, read and checked once at start-up into immutable settings (its
  docstring is the reference of what each option means);
- :mod:`.call`: :class:`HttpAdapter`, one call on the wire (token, rate limit, session, body), and
  the probe ``cancel-processor check`` sends;
- :mod:`.outcomes`: what an answer, or a failed call, means;
- :mod:`.oauth`: the OAuth2 client-credentials token, shared by the calling threads.

The adapter's rate limit is :mod:`processor.adapters.rate`'s.
"""

from __future__ import annotations

from processor.adapters.http.call import HttpAdapter
from processor.adapters.http.outcomes import retry_after_seconds
from processor.adapters.http.settings import DEFAULT_OUTCOMES, OUTCOME_NAMES, TEMPLATE_FIELDS

__all__ = [
    "DEFAULT_OUTCOMES",
    "OUTCOME_NAMES",
    "TEMPLATE_FIELDS",
    "HttpAdapter",
    "retry_after_seconds",
]
