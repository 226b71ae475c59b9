"""The web page at ``/``: subscriptions and requests at a glance, and a "Cancel subscription"
button.

Server-rendered HTML, no build step, a few lines of inline JavaScript for the optional auto-refresh.
The button posts a form to ``/ui/subscriptions/{id}/cancel``, which goes through the same code path
as ``POST /public/v1/requests`` (the ledger shows the actor ``ui``), as a customer cancelling in
Connect's UI would. Everything shown is escaped; no API key is ever printed. At most
:data:`ROWS` rows per table are shown (newest first): the page stays fast over 100,000 requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from urllib.parse import urlencode

from cancel_sandbox.marketplace.factories import CANCELLATION_REASONS
from cancel_sandbox.marketplace.fields import REQUEST_FIELDS
from cancel_sandbox.marketplace.records import Asset, Request
from cancel_sandbox.marketplace.rql import Cmp
from cancel_sandbox.marketplace.store import Store

__all__ = ["render_page", "ROWS"]

ROWS = 100
REQUEST_STATUSES = (
    "pending",
    "inquiring",
    "scheduled",
    "revoking",
    "approved",
    "failed",
    "revoked",
)
SUBSCRIPTION_STATUSES = ("active", "terminating", "terminated", "processing", "suspended")

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2733}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}
th,td{padding:.3rem .5rem;border-bottom:1px solid #dde3ea;text-align:left}
th{background:#f3f6f9}.s{font-weight:600}.pending,.terminating{color:#a15c00}.approved,.terminated{color:#1b6e2c}
.failed,.revoked{color:#a3231b}.note{background:#eef6ff;padding:.5rem;border-radius:4px}.err{background:#fdecea}
nav a{margin-right:.6rem}form{display:inline}button{cursor:pointer}code{font-size:12px}
"""
_SCRIPT = """
const box=document.getElementById('auto');box.checked=location.hash==='#auto';
box.onchange=()=>{location.hash=box.checked?'auto':'';};
setInterval(()=>{if(box.checked)location.reload();},5000);
"""


def _filters(
    current: str | None, name: str, options: tuple[str, ...], keep: Mapping[str, str]
) -> str:
    links = []
    for option in (None, *options):
        params = {k: v for k, v in keep.items() if k != name and v}
        if option:
            params[name] = option
        label = option or "all"
        text = f"<b>{label}</b>" if option == current else label
        links.append(f'<a href="/?{escape(urlencode(params))}">{text}</a>')
    return "<nav>" + "".join(links) + "</nav>"


def _customer(asset: Asset) -> str:
    return str((asset.tiers.get("customer") or {}).get("name", ""))


def _subscription_row(asset: Asset) -> str:
    sub_id = asset.params.get(asset.product.params[0]["id"], "") if asset.product.params else ""
    action = ""
    if asset.status == "active":
        reasons = "".join(
            f'<option value="{value}">{escape(label)}</option>'
            for value, label in CANCELLATION_REASONS
        )
        action = (
            f'<form method="post" action="/ui/subscriptions/{escape(asset.id)}/cancel">'
            '<select name="cancellation_reason"><option value="">no reason</option>'
            f"{reasons}</select> "
            '<button type="submit">Cancel subscription</button></form>'
        )
    return (
        f"<tr><td><code>{escape(asset.id)}</code></td><td>{escape(asset.product.name)}</td>"
        f"<td>{escape(_customer(asset))}</td><td>{escape(asset.connection['type'])}</td>"
        f"<td>{escape(asset.marketplace['name'])}</td><td><code>{escape(sub_id)}</code></td>"
        f'<td class="s {escape(asset.status)}">{escape(asset.status)}</td><td>{action}</td></tr>'
    )


def _request_row(request: Request) -> str:
    assignee = (request.assignee or {}).get("email", "")
    reason = request.param("cancellation_reason") or ""
    return (
        f"<tr><td><code>{escape(request.id)}</code></td><td>{escape(request.type)}</td>"
        f'<td class="s {escape(request.status)}">{escape(request.status)}</td>'
        f"<td>{escape(request.asset.product.name)}</td><td>{escape(_customer(request.asset))}</td>"
        f"<td>{escape(request.asset.connection['type'])}</td><td>{escape(request.created.isoformat())}</td>"
        f"<td>{escape(reason)}</td><td>{escape(request.reason)}</td><td>{escape(assignee)}</td></tr>"
    )


def render_page(store: Store, params: Mapping[str, str]) -> str:
    request_status = params.get("request_status") or None
    subscription_status = params.get("subscription_status") or None
    keep = {
        "request_status": request_status or "",
        "subscription_status": subscription_status or "",
    }
    with store.lock:
        store.tick()
        stats = store.stats()
        node = Cmp("eq", "status", request_status) if request_status else None
        total, requests = store.index.query(
            node, ("-created", "-id"), 0, ROWS, store.requests, REQUEST_FIELDS
        )
        subscriptions: list[Asset] = []
        for asset in reversed(store.assets.values()):
            if subscription_status is None or asset.status == subscription_status:
                subscriptions.append(asset)
                if len(subscriptions) >= ROWS:
                    break
        request_rows = "".join(_request_row(r) for r in requests)
        subscription_rows = "".join(_subscription_row(a) for a in subscriptions)
    notices = []
    if params.get("created"):
        notices.append(
            f'<p class="note">Cancel request <code>{escape(params["created"])}</code> created.</p>'
        )
    if params.get("error"):
        notices.append(f'<p class="note err">{escape(params["error"])}</p>')
    counts = ", ".join(f"{escape(k)}: {v}" for k, v in stats["requests_by_status"].items())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Mock Connect marketplace</title><style>{_STYLE}</style></head><body>
<h1>Mock Connect marketplace</h1>
<p>{stats["requests"]} requests ({counts}); {stats["subscriptions"]} subscriptions;
clock {escape(str(stats["now"]))}. API at <code>/public/v1</code>,
ledger at <a href="/admin/ledger">/admin/ledger</a>,
counts at <a href="/admin/stats">/admin/stats</a>.
<label><input type="checkbox" id="auto"> refresh every 5 s</label></p>
{"".join(notices)}
<h2>Requests ({min(total, ROWS)} of {total} shown, newest first)</h2>
{_filters(request_status, "request_status", REQUEST_STATUSES, keep)}
<table><tr><th>request</th><th>type</th><th>status</th><th>product</th><th>customer</th>
<th>environment</th><th>created</th><th>cancellation reason</th><th>fail reason</th>
<th>assignee</th></tr>{request_rows}</table>
<h2>Subscriptions (newest first, at most {ROWS})</h2>
{_filters(subscription_status, "subscription_status", SUBSCRIPTION_STATUSES, keep)}
<table><tr><th>subscription</th><th>product</th><th>customer</th><th>environment</th><th>marketplace</th>
<th>vendor id</th><th>status</th><th></th></tr>{subscription_rows}</table>
<script>{_SCRIPT}</script></body></html>"""
