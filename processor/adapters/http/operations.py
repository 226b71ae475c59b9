"""Asynchronous operations of the ``http`` adapter: a terminate (suspend, purge) the vendor answers
``202 Accepted`` with an operation to poll.

An operation declares how its acceptance looks and how to poll it, under ``async``::

    terminate:
      async:
        status: 202                       # the answer's status code(s) that mean "accepted"
        operation_id: operation_id        # key path of the operation id in the answer's body, or
        location: true                    # take the URL of the vendor's Location header
        poll: /v1/operations/{operation_id}   # with operation_id: where to poll it
        field: status                     # key path of the operation's state in a poll's body
        done: [succeeded]                 # the states that mean it completed
        failed: [failed]                  # ... that it failed (the step did not happen)
        pending: [pending, running]       # ... that it is still running
        error_field: error                # key path of a failed operation's reason (a detail)
        every: 5                          # seconds between polls
        give_up: 3600                     # seconds after acceptance: still pending, parked

An accepted answer is :class:`~processor.adapters.base.Accepted` with the operation id, or the
``Location`` URL resolved against ``base_url``. Without a usable id (no field, no header) it is
:class:`Ambiguous`: the vendor took the call and may act. The adapter then has ``poll(call,
operation)``: a ``GET`` of the poll path (the id as one path segment, under the subscription id
rule of :data:`processor.urls.VENDOR_ID`) or of the ``Location`` URL, which must be on the
vendor's ``base_url`` (same scheme, host, port and path prefix) -- a Location elsewhere is never
sent the vendor's credentials. A poll is a read: its transport failures, ``429`` and ``5xx`` are
:class:`RetryLater`; a ``404``, another status, a body that is not JSON or a state that is none
of done, failed and pending is a definite error (:class:`Failed`), which the engine counts and
then parks -- it never approves on one.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from processor.adapters.base import (
    Accepted,
    AdapterError,
    Ambiguous,
    Done,
    Failed,
    OperationFailed,
    Pending,
    PollAnswer,
    RetryLater,
)
from processor.urls import UnsafeSegment, segment

__all__ = ["AsyncSpec", "accepted_outcome", "async_spec", "poll_answer", "poll_url"]

MAX_REF_CHARS = 2048  # the engine keeps the reference in the journal row


@dataclass(frozen=True, slots=True)
class AsyncSpec:
    """How one operation's acceptance looks and how to poll it (the ``async`` option)."""

    statuses: frozenset[int]
    id_field: str | None  # the operation id in the accepted answer's body, or
    location: bool  # the Location header's URL
    poll_path: str | None  # with id_field: a path with one {operation_id}
    field: str
    done: frozenset[str]
    failed: frozenset[str]
    pending: frozenset[str]
    error_field: str | None
    every: float
    give_up: float


def async_spec(raw: Any, key: str, options: Callable[[Any, str], Any]) -> AsyncSpec:
    """Read the ``async`` option at ``key``; ``options`` is :class:`.settings.Options` (passed
    in: that module reads every other option and calls this one). Raises AdapterError naming
    the dotted key."""
    o = options(raw, key + ".")
    codes = o.get("status", 202)
    listed = codes if isinstance(codes, list) else [codes]
    if not listed or any(
        isinstance(c, bool) or not isinstance(c, int) or not 200 <= c <= 299 for c in listed
    ):
        raise AdapterError(f"option '{key}.status': expected 2xx status codes, got {codes!r:.60}")
    id_field = o.text("operation_id", None)
    location = o.get("location", False)
    if not isinstance(location, bool):
        raise AdapterError(f"option '{key}.location': expected true or false")
    poll = o.text("poll", None)
    if (id_field is None) == (not location):
        raise AdapterError(
            f"option '{key}': give exactly one of operation_id (a body field) or location: true"
        )
    if id_field is not None:
        if poll is None:
            raise AdapterError(f"option '{key}.poll': required with operation_id")
        _check_poll_path(poll, f"{key}.poll")
    elif poll is not None:
        raise AdapterError(f"option '{key}.poll': with location: true the Location is polled")
    values = {name: _values(o.get(name, default), f"{key}.{name}") for name, default in _STATES}
    names = list(values)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            both = values[first] & values[second]
            if both:
                raise AdapterError(
                    f"option '{key}.{second}': {sorted(both)[0]!r} is also in {key}.{first}"
                )
    every, give_up = o.seconds("every", 10.0), o.seconds("give_up", 3600.0)
    if give_up < every:
        raise AdapterError(f"option '{key}.give_up': shorter than every ({every:g}s)")
    error_field = o.text("error_field", "error")
    field = o.text("field", "status")
    o.done()
    return AsyncSpec(
        statuses=frozenset(listed),
        id_field=id_field,
        location=location,
        poll_path=poll,
        field=field,
        done=values["done"],
        failed=values["failed"],
        pending=values["pending"],
        error_field=error_field,
        every=every,
        give_up=give_up,
    )


_STATES = (("done", ["done"]), ("failed", ["failed"]), ("pending", ["pending"]))


def _values(raw: Any, key: str) -> frozenset[str]:
    listed = raw if isinstance(raw, list) else [raw]
    if not listed or not all(isinstance(v, str) and v.strip() for v in listed):
        raise AdapterError(f"option '{key}': expected a non-empty list of strings")
    return frozenset(listed)


def _check_poll_path(path: str, key: str) -> None:
    if not path.startswith("/"):
        raise AdapterError(f"option '{key}': expected a path starting with '/', got {path!r:.60}")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(path) if name is not None]
    except ValueError as exc:
        raise AdapterError(f"option '{key}': bad template {path!r:.60}: {exc}") from None
    if names != ["operation_id"]:
        raise AdapterError(f"option '{key}': name {{operation_id}} once and no other field")


def lookup(body: Any, path: str) -> Any:
    """:func:`.settings.lookup` (imported when called: settings imports this module)."""
    from processor.adapters.http.settings import lookup as settings_lookup

    return settings_lookup(body, path)


def accepted_outcome(
    spec: AsyncSpec,
    name: str,
    headers: Mapping[str, str],
    body: Any,
    detail: str,
    base_url: str,
) -> Accepted | Ambiguous:
    """An accepted answer: the operation to poll, or Ambiguous when it names none usable."""
    if spec.location:
        where = headers.get("Location")
        ref = urljoin(base_url + "/", where) if isinstance(where, str) and where.strip() else None
        missing = "no Location header"
    else:
        assert spec.id_field is not None
        value = lookup(body, spec.id_field)
        ref = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        missing = f"no {spec.id_field} in the body"
    if not ref or len(ref) > MAX_REF_CHARS or not ref.isprintable():
        why = missing if not ref else "an operation reference that cannot be kept"
        return Ambiguous(f"{detail}: accepted, but {why}; the vendor may act")
    return Accepted(
        ref, f"{name} accepted as operation {ref}", after=spec.every, give_up=spec.give_up
    )


def poll_url(spec: AsyncSpec, ref: str, base_url: str) -> str | Failed:
    """The URL to poll ``ref`` at, or why it is not polled (a definite error)."""
    if spec.location:
        target, base = urlsplit(ref), urlsplit(base_url + "/")
        same = (target.scheme, target.hostname, target.port) == (
            base.scheme,
            base.hostname,
            base.port,
        )
        if not same or not target.path.startswith(base.path) or not ref.isprintable():
            return Failed(
                f"poll: the operation's Location {ref[:200]!r} is not on the vendor's base_url; "
                "it is not sent the vendor's credentials"
            )
        return ref
    assert spec.poll_path is not None
    try:
        return base_url + spec.poll_path.replace("{operation_id}", segment("vendor", ref))
    except UnsafeSegment as unsafe:
        return Failed(f"poll: operation id {ref[:80]!r}: {unsafe}; not sent")


def poll_answer(
    spec: AsyncSpec,
    code: int,
    body: Any,
    detail: str,
    retry_after: float | None,
) -> PollAnswer:
    """What a poll's answer says of the operation (see the module docstring)."""
    if code == 429 or code >= 500:
        return RetryLater(detail, after=retry_after)
    if not 200 <= code <= 299:
        return Failed(detail)
    if not isinstance(body, Mapping):
        return Failed(f"{detail} but the body is not a JSON object")
    value = lookup(body, spec.field)
    state = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if state in spec.done:
        return Done(detail)
    if state in spec.pending:
        return Pending(detail, after=spec.every)
    if state in spec.failed:
        reason = lookup(body, spec.error_field) if spec.error_field else None
        why = "" if reason is None else f": {str(reason)[:300]}"
        return OperationFailed(f"{detail}{why}")
    known = sorted(spec.done | spec.pending | spec.failed)
    return Failed(f"{detail} but {spec.field} is {state!r:.60}, none of {known}")
