"""The status page, rendered on the server: plain HTML, one small inline script, no build step.

Everything shown comes from the journal, but the vendor rate limits: this process's own metrics
(waits, seconds waited, calls waiting now and for how long; waiting is not an error). Every value
passes through :func:`processor.observe.mask` (a secret that slipped into an error text is shown as
``***``) and is HTML-escaped; identifiers in URLs are percent-encoded. The script and the style
carry a per-response nonce that the server's Content-Security-Policy names, so no other script can
run on the page.

Pages: the overview (counts by state, filters, newest requests, the parked list with a Retry button
each, the list waiting for a person, the vendor rate limits), one request's timeline, and a short
message page for errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from processor.journal.base import FINAL_STATES, RequestRecord, State, Transition
from processor.observe import Metrics, mask
from processor.ops.listing import Filters, Listing

__all__ = [
    "IndexView",
    "RateView",
    "rate_views",
    "render_index",
    "render_request",
    "render_message",
    "request_path",
]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2rem 1.5rem;color:#1d2733;background:#fff}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
.sub{color:#5b6b7b;font-size:12px}a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;width:100%}
th,td{padding:.28rem .5rem;border-bottom:1px solid #e1e6ec;text-align:left;vertical-align:top}
th{background:#f3f6f9;font-weight:600;white-space:nowrap}
td.n{text-align:right}.err{color:#8a1f17;max-width:28rem;overflow-wrap:anywhere}.why{max-width:32rem}
.tiles{display:flex;flex-wrap:wrap;gap:.4rem}.tile{border:1px solid #dde3ea;border-radius:6px;
padding:.3rem .6rem;min-width:6.5rem}.tile b{display:block;font-size:1.15rem}.zero{opacity:.45}
.st{font-weight:600;padding:0 .35rem;border-radius:4px;white-space:nowrap}
.s-approved,.s-terminated{background:#e3f4e6;color:#1b6e2c}
.s-failed,.s-refusing{background:#fdecea;color:#a3231b}
.s-parked,.s-waiting_human,.s-held{background:#fff1d6;color:#8a5300}
.latched{background:#fdecea;color:#8a1f17;padding:.4rem .6rem;border-radius:4px}
.s-new,.s-scheduled,.s-suspended{background:#e8f0fb;color:#0b4f9c}
.s-terminating,.s-suspending,.s-purging{background:#efe8fb;color:#5a2d91}
.s-revoked,.s-closed{background:#eceff2;color:#4a5561}
form.f{display:flex;gap:.5rem;align-items:end;flex-wrap:wrap}label{font-size:12px;color:#5b6b7b}
input,select{display:block;font:inherit;padding:.15rem .3rem}button{font:inherit;cursor:pointer}
form.inline{display:inline;margin:0}h1 button{font-size:14px;vertical-align:middle}
.note{background:#fff8e6;padding:.4rem .6rem;border-radius:4px}
code,.id{font:12px ui-monospace,monospace;white-space:nowrap}.t{white-space:nowrap}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{color:#5b6b7b}dd{margin:0;overflow-wrap:anywhere}
"""
# Auto-refresh is opt-in (remembered in the URL fragment): a reload would discard a half-typed
# filter.
_SCRIPT = """
const box=document.getElementById('auto');if(box){box.checked=location.hash==='#auto';
box.onchange=()=>{location.hash=box.checked?'auto':'';};
setInterval(()=>{if(box.checked)location.reload();},10000);}
"""


def _t(value: Any) -> str:
    """Any value as safe HTML text: masked, then escaped. None is empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return escape(_when(value))
    return escape(mask(str(value)))


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def request_path(request_id: str) -> str:
    return "/requests/" + quote(request_id, safe="")


def _state(state: State | None) -> str:
    return (
        ""
        if state is None
        else f'<span class="st s-{escape(state.value)}">{escape(state.value)}</span>'
    )


def _link(request_id: str) -> str:
    return f'<a class="id" href="{escape(request_path(request_id))}">{_t(request_id)}</a>'


def _retry_button(request_id: str, back: str) -> str:
    return (
        f'<form class="inline" method="post" action="{escape(request_path(request_id))}/retry">'
        f'<input type="hidden" name="next" value="{escape(back)}">'
        f'<button type="submit" data-retry="{_t(request_id)}">Retry</button></form>'
    )


def _page(title: str, body: str, nonce: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{_t(title)}</title><style nonce="{escape(nonce)}">{_STYLE}</style></head>'
        f'<body>{body}<script nonce="{escape(nonce)}">{_SCRIPT}</script></body></html>'
    )


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="sub">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


@dataclass(frozen=True)
class RateView:
    """One adapter's rate limit as this process sees it."""

    adapter: str
    shared: bool  # by every replica through the journal, or this process's own
    waits: int
    waited: float  # seconds, all waits together
    waiting: int  # calls waiting for a slot now
    longest: float  # seconds the longest current wait has lasted (0: none)
    shared_errors: int  # shared slots the journal could not give


def rate_views(metrics: Metrics, now: float) -> list[RateView]:
    """Every rate-limited adapter's view from ``metrics``, at the Unix time ``now``."""

    def values(collector: Any) -> dict[str, float]:
        return {
            sample.labels["adapter"]: sample.value
            for family in collector.collect()
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    shared, waits = values(metrics.rate_shared), values(metrics.rate_waits)
    waited, waiting = values(metrics.rate_wait_seconds), values(metrics.rate_waiting)
    since, errors = values(metrics.rate_waiting_since), values(metrics.rate_shared_errors)
    return [
        RateView(
            adapter=name,
            shared=shared.get(name, 0) == 1,
            waits=int(waits.get(name, 0)),
            waited=waited.get(name, 0.0),
            waiting=int(waiting.get(name, 0)),
            longest=max(0.0, now - since[name]) if since.get(name) else 0.0,
            shared_errors=int(errors.get(name, 0)),
        )
        for name in sorted({*shared, *waits, *waiting})
    ]


def _rate_row(view: RateView) -> str:
    scope = "shared by the replicas" if view.shared else "this process's own"
    return (
        f'<tr data-adapter="{_t(view.adapter)}"><td class="id">{_t(view.adapter)}</td>'
        f'<td>{scope}</td><td class="n waits">{view.waits}</td>'
        f'<td class="n">{view.waited:.1f} s</td><td class="n waiting">{view.waiting}</td>'
        f'<td class="n longest">{view.longest:.1f} s</td>'
        f'<td class="n">{view.shared_errors}</td></tr>'
    )


@dataclass(frozen=True)
class IndexView:
    counts: dict[State, int]
    filters: Filters
    recent: Listing
    parked: list[tuple[RequestRecord, str]]  # (record, why)
    waiting: list[tuple[RequestRecord, str]]
    journal_url: str
    generated_at: datetime
    back: str  # this page's own path and query: where a Retry returns to
    notice: str | None = None
    rates: Sequence[RateView] = ()
    held: Sequence[tuple[RequestRecord, str]] = ()  # refusals or "already gone" held back
    latched: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # adapter: latch


def _latches(latched: Mapping[str, Mapping[str, str]]) -> str:
    """One line per latched adapter: no vendor call leaves it until a person resumes it."""
    return "".join(
        f'<p class="latched" role="alert"><b>Latched:</b> adapter {_t(name)} makes no vendor call '
        f"since {_t(latch.get('since') or '?')}: {_t(latch.get('reason') or '')}</p>"
        for name, latch in sorted(latched.items())
    )


def _tiles(counts: dict[State, int]) -> str:
    total = sum(counts.values())
    tiles = [f'<a class="tile" href="/"><b>{total}</b>all</a>']
    for state in State:
        n = counts.get(state, 0)
        href = "/?" + urlencode({"state": state.value})
        cls = "tile" + ("" if n else " zero")
        tiles.append(
            f'<a class="{cls}" href="{escape(href)}" data-state="{state.value}">'
            f"<b>{n}</b>{state.value}</a>"
        )
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _filter_form(filters: Filters) -> str:
    options = ['<option value="">any</option>'] + [
        f'<option value="{s.value}"{" selected" if s is filters.state else ""}>{s.value}</option>'
        for s in State
    ]
    return (
        f'<form class="f" method="get" action="/">'
        f'<label>state<select name="state">{"".join(options)}</select></label>'
        f'<label>product<input name="product" value="{_t(filters.product)}" placeholder="PRD-...">'
        "</label>"
        f'<label>request or subscription id<input name="q" value="{_t(filters.text)}" size="28">'
        "</label>"
        f'<button type="submit">Filter</button> <a href="/">clear</a>'
        f'<label><input type="checkbox" id="auto"> refresh every 10 s</label></form>'
    )


def _recent_row(record: RequestRecord) -> str:
    return (
        f'<tr data-request="{_t(record.request_id)}"><td>{_link(record.request_id)}</td>'
        f'<td class="state">{_state(record.state)}</td><td>{_t(record.outcome)}</td>'
        f'<td class="n">{record.attempts}</td><td class="id">{_t(record.product_id)}</td>'
        f'<td class="id">{_t(record.subscription_id)}</td><td class="why">{_t(record.reason)}</td>'
        f'<td class="err">{_t(record.last_error)}</td><td class="t">{_t(record.updated_at)}</td>'
        "</tr>"
    )


def _attention_row(record: RequestRecord, why: str, back: str, button: bool) -> str:
    action = f"<td>{_retry_button(record.request_id, back)}</td>" if button else ""
    return (
        f'<tr data-request="{_t(record.request_id)}"><td>{_link(record.request_id)}</td>'
        f'<td class="id">{_t(record.product_id)}</td>'
        f'<td class="id">{_t(record.subscription_id)}</td><td class="why">{_t(why)}</td>'
        f'<td class="t">{_t(record.updated_at)}</td>{action}</tr>'
    )


def render_index(view: IndexView, *, nonce: str) -> str:
    counts, recent = view.counts, view.recent
    shown = f"{len(recent.records)} newest" + (" matching" if view.filters.query() else "")
    if recent.truncated:
        shown += (
            f" (search stopped after {recent.scanned} records: narrow the filters to see "
            "older ones)"
        )
    notice = f'<p class="note" role="status">{_t(view.notice)}</p>' if view.notice else ""
    parked_n, waiting_n = counts.get(State.PARKED, 0), counts.get(State.WAITING_HUMAN, 0)
    held_n = counts.get(State.HELD, 0)
    body = (
        f'<h1>Cancel processor</h1><div class="sub">journal {_t(view.journal_url)} &middot; '
        f"generated {_t(view.generated_at)}</div>{notice}{_latches(view.latched)}"
        f"<h2>Requests by state</h2>{_tiles(counts)}"
        f'<h2 id="parked">Parked: waiting for an operator ({parked_n})</h2>'
        + _table(
            ["request", "product", "subscription", "why", "updated", ""],
            (_attention_row(r, why, view.back, True) for r, why in view.parked),
            "Nothing is parked.",
        )
        + f'<h2 id="waiting">Waiting for a person ({waiting_n})</h2>'
        + _table(
            ["request", "product", "subscription", "why", "updated"],
            (_attention_row(r, why, view.back, False) for r, why in view.waiting),
            "Nobody is needed.",
        )
        + f'<h2 id="held">Held back from Connect: refused or already gone ({held_n})</h2>'
        + _table(
            ["request", "product", "subscription", "why", "updated"],
            (_attention_row(r, why, view.back, False) for r, why in view.held),
            "Nothing is held.",
        )
        + '<h2 id="rates">Vendor rate limits (waiting is not an error)</h2>'
        + _table(
            [
                "adapter",
                "limit",
                "waits",
                "waited",
                "waiting now",
                "longest current wait",
                "shared slots not given",
            ],
            (_rate_row(v) for v in view.rates),
            "No adapter has a rate limit.",
        )
        + f'<h2 id="recent">Recent requests</h2>{_filter_form(view.filters)}'
        f'<p class="sub">{escape(shown)}, newest first</p>'
        + _table(
            [
                "request",
                "state",
                "outcome",
                "attempts",
                "product",
                "subscription",
                "reason",
                "last error",
                "updated",
            ],
            (_recent_row(r) for r in recent.records),
            "No request matches.",
        )
    )
    return _page("Cancel processor status", body, nonce)


def _fields(record: RequestRecord) -> str:
    pairs: list[tuple[str, Any]] = [
        ("state", None),
        ("outcome", record.outcome),
        ("attempts", record.attempts),
        ("next attempt", record.next_attempt_at),
        ("reason", record.reason),
        ("last error", record.last_error),
        ("product", record.product_id),
        ("subscription", record.subscription_id),
        ("asset", record.asset_id),
        ("marketplace", record.marketplace_id),
        ("environment", record.environment),
        ("customer", record.customer_id),
        (
            "lease",
            f"{record.lease_owner} until {_when(record.lease_expires_at)}"
            if record.lease_owner
            else None,
        ),
        ("fence", record.fence),
        ("created", record.created_at),
        ("updated", record.updated_at),
        (
            "data",
            json.dumps(dict(record.data), sort_keys=True, default=str) if record.data else None,
        ),
    ]
    items = [f"<dt>state</dt><dd>{_state(record.state)}</dd>"]
    items += [f"<dt>{escape(k)}</dt><dd>{_t(v)}</dd>" for k, v in pairs[1:] if v not in (None, "")]
    return f"<dl>{''.join(items)}</dl>"


def _transition_row(t: Transition) -> str:
    return (
        f'<tr><td class="t">{_t(t.at)}</td><td>{_state(t.from_state) or "&mdash;"}</td>'
        f"<td>{_state(t.to_state)}</td>"
        f'<td class="n">{t.fence}</td><td>{_t(t.owner)}</td><td class="why">{_t(t.detail)}</td>'
        "</tr>"
    )


def render_request(
    record: RequestRecord,
    transitions: Sequence[Transition],
    *,
    nonce: str,
    notice: str | None = None,
) -> str:
    back = request_path(record.request_id)
    button = _retry_button(record.request_id, back) if record.state is State.PARKED else ""
    final = (
        "final: the processor leaves it alone"
        if record.state in FINAL_STATES
        else "in progress: the processor works on it"
    )
    note = f'<p class="note" role="status">{_t(notice)}</p>' if notice else ""
    body = (
        f'<div class="sub"><a href="/">&larr; all requests</a></div>'
        f"<h1>{_t(record.request_id)} {_state(record.state)} {button}</h1>"
        f'<div class="sub">{final}</div>{note}<h2>Record</h2>{_fields(record)}'
        f"<h2>Timeline ({len(transitions)} transitions, oldest first)</h2>"
        + _table(
            ["at", "from", "to", "fence", "by", "detail"],
            (_transition_row(t) for t in transitions),
            "No transition recorded.",
        )
    )
    return _page(f"{record.request_id} - cancel processor", body, nonce)


def render_message(title: str, text: str, *, nonce: str) -> str:
    body = (
        f'<div class="sub"><a href="/">&larr; status</a></div><h1>{_t(title)}</h1><p>{_t(text)}</p>'
    )
    return _page(title, body, nonce)
