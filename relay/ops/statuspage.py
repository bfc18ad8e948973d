"""The status page at `/` of the ops HTTP server: one self-refreshing, read-only HTML page
rendered from the cached facts snapshot (never a database query per request).

It answers requests from this host only, unless PGPULSE_STATUS_SECRET is set: then other
hosts get it with HTTP Basic auth (any user name, the secret as password). A request that
came through a proxy (X-Forwarded-For / Forwarded) counts as another host's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from relay import __version__
from relay.config import OpsSettings
from relay.ops import metrics
from relay.ops.alerts import evaluate

REFRESH_S = 10
STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--muted:#6e7781}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:12px;
     max-width:1100px;margin-inline:auto}
h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.05em;margin:20px 0 6px}
.meta{color:var(--muted);font-size:.85em}
.banner{padding:10px 12px;border-radius:8px;margin:10px 0;font-weight:600}
.banner.ok{background:#dafbe1;color:#116329}.banner.bad{background:#ffebe9;color:#a40e26}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #8884;white-space:nowrap}
td.num,th.num{text-align:right}
.tag{display:inline-block;padding:1px 7px;border-radius:10px;font-size:.82em;font-weight:600}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}
.tag.ok{background:#dafbe1}.tag.bad{background:#ffebe9}.tag.warn{background:#fff8c5}
ul{padding-left:20px;margin:6px 0}li{margin:3px 0}
.err{white-space:normal;max-width:40ch;overflow-wrap:anywhere}
@media (max-width:600px){body{padding:8px;font-size:14px}th,td{padding:5px 6px}}
"""
# the page's only style, allowed by its hash: no inline script, nothing loaded from elsewhere
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def access(scope: dict, settings: OpsSettings) -> tuple[int, str] | None:
    """None when the request may see the page, else (status, reason)."""
    headers = dict(scope.get("headers") or [])
    proxied = b"x-forwarded-for" in headers or b"forwarded" in headers
    client = (scope.get("client") or ("", 0))[0]
    try:
        local = ipaddress.ip_address(client).is_loopback and not proxied
    except ValueError:
        local = False
    if local:
        return None
    secret = settings.status_secret
    if not secret:
        return 403, "the status page answers on this host only (set PGPULSE_STATUS_SECRET)"
    scheme, _, encoded = headers.get(b"authorization", b"").partition(b" ")
    try:
        _user, _, given = base64.b64decode(encoded, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        given = b""
    if scheme.lower() == b"basic" and hmac.compare_digest(given, secret.encode()):
        return None
    return 401, "the status page needs the password (PGPULSE_STATUS_SECRET)"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%H:%M:%S")
    return "-" if value is None else escape(str(value))


def _tag(text: str, kind: str) -> str:
    return f'<span class="tag {kind}">{escape(text)}</span>'


def render(
    snapshot: Any,
    settings: OpsSettings,
    now: float | None = None,
    breakers_open_s: dict[str, float] | None = None,
) -> str:
    """`snapshot` (relay.ops.snapshot.Snapshot): facts (relay.ops.facts, None before the first
    read), read_at, attempted_at, database_ok, error (a public reason). `breakers_open_s`: this
    process's relay's breakers, for the rules."""
    now = now or time.time()
    facts = snapshot.facts
    not_yet = snapshot.attempted_at is None
    down_s = (
        None
        if snapshot.database_ok or not_yet
        else (now - snapshot.read_at if snapshot.read_at else settings.alert_database_down_s)
    )
    findings = evaluate(
        settings, facts if snapshot.database_ok else None, breakers_open_s or {}, down_s
    )
    parts = [
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="referrer" content="no-referrer">
<title>pgpulse status</title><style>{STYLE}</style></head><body>
<h1>pgpulse status</h1>
<div class="meta">pgpulse {escape(__version__)} · {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))}
 · refreshes every {REFRESH_S} s · facts {_ago(snapshot.read_at and now - snapshot.read_at)} old</div>"""
    ]
    if not_yet:
        parts.append(
            '<div class="banner bad" id="database">Starting: the database has not '
            "been read yet</div>"
        )
    elif not snapshot.database_ok:
        parts.append(
            f'<div class="banner bad" id="database">Database unreachable: '
            f"{escape(snapshot.error or 'unknown')}"
            + (" — showing the last known state" if facts else "")
            + "</div>"
        )
    if findings:
        parts.append(
            f'<div class="banner bad" id="verdict">{len(findings)} alert'
            f"{'s' if len(findings) != 1 else ''} firing</div>"
        )
    elif facts:
        parts.append('<div class="banner ok" id="verdict">All good: ticks run, jobs flow</div>')

    parts.append('<h2>Firing alerts</h2><ul id="alerts">')
    parts += [
        f'<li><span class="bad">{escape(f.rule)}</span> {escape(f.summary)}</li>' for f in findings
    ] or ['<li class="ok">none</li>']
    parts.append("</ul>")
    if facts:
        parts += [_regions(facts), _ticks(facts, now), _dead_letters(facts)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _regions(facts: dict[str, Any]) -> str:
    backlog = {b["region"]: b for b in facts["backlog"]}
    dead = facts.get("dead_letters", {})
    rows = []
    for r in facts["regions"]:
        code = r["code"]
        b = backlog.get(code, {})
        if not r["enabled"]:
            health = _tag("disabled", "warn")
        elif not r["healthy"]:
            health = _tag("unhealthy", "bad")
        elif r.get("workers_absent"):
            health = _tag("workers absent", "bad")
        elif r["degraded"]:
            health = _tag("degraded", "warn")
        else:
            health = _tag("healthy", "ok")
        state = metrics.BREAKERS.get(code)
        breaker = (
            _tag(state.replace("_", "-"), "ok" if state == "closed" else "bad")
            if state
            else '<span class="meta">not relayed here</span>'
        )
        oldest = float(b.get("oldest_due_age_s") or 0)
        rows.append(
            f'<tr data-region="{escape(code)}"><td><b>{escape(code)}</b>'
            + (" " + _tag("default", "ok") if r["is_default"] else "")
            + f"</td><td>{health}</td>"
            f"<td>{breaker}</td><td class=num>{b.get('due', 0)}</td>"
            f'<td class="num {"bad" if oldest > 60 else ""}">{_ago(oldest) if b.get("due") else "-"}</td>'
            f"<td class=num>{dead.get(code, 0)}</td><td>{escape(r['fallback_region'] or '-')}</td></tr>"
        )
    return (
        '<h2>Regions</h2><div class="scroll"><table id="regions"><tr><th>region</th>'
        "<th>health</th><th>breaker</th><th class=num>due</th><th class=num>oldest due</th>"
        "<th class=num>dead letters</th><th>fallback</th></tr>"
        + "".join(rows or ['<tr><td colspan="7">no regions: pgpulse region add CODE</td></tr>'])
        + "</table></div>"
    )


def _ticks(facts: dict[str, Any], now: float) -> str:
    rows = []
    for t in facts["recent_ticks"]:
        marks = []
        if t["cut_short"]:
            marks.append(_tag("CUT SHORT", "bad"))
        if t["finished_at"] is None:
            marks.append(_tag("running", "warn"))
        trigger = _tag("pg_cron", "ok") if t["trigger"] == "pg_cron" else escape(t["trigger"])
        duration = "-" if t["duration_ms"] is None else f"{t['duration_ms'] / 1000:.2f} s"
        # the marks sit by the trigger: on a phone the right-hand columns are off-screen
        rows.append(
            f"<tr><td class=num>{t['id']}</td><td>{' '.join([trigger, *marks])}</td>"
            f"<td>{_when(t['started_at'])}</td><td class=num>{duration}</td>"
            f"<td class=num>{t['monitors_claimed']}</td><td class=num>{t['jobs_written']}</td></tr>"
        )
    cron = facts.get("pg_cron")
    if cron:
        cron_line = (
            f"pg_cron job <b>{escape(cron['jobname'])}</b> '{escape(cron['schedule'])}' "
            + (_tag("active", "ok") if cron["active"] else _tag("inactive", "bad"))
            + f", last run {escape(cron['last_status'] or 'never')} at {_when(cron['last_start'])}"
        )
    else:
        cron_line = "pg_cron: " + escape(facts.get("pg_cron_note") or "not shown")
    last = facts.get("last_tick_age_s")
    return (
        f'<h2>Recent ticks</h2><div class="meta" id="cron">{cron_line} · last finished tick '
        f"{_ago(last)}{' ago' if last is not None else ''}</div>"
        '<div class="scroll"><table id="ticks"><tr><th class=num>#</th><th>trigger</th>'
        "<th>started (UTC)</th><th class=num>took</th><th class=num>monitors</th>"
        "<th class=num>jobs</th></tr>"
        + "".join(rows or ['<tr><td colspan="6">no tick yet</td></tr>'])
        + "</table></div>"
    )


def _dead_letters(facts: dict[str, Any]) -> str:
    total = sum(facts.get("dead_letters", {}).values())
    rows = [
        f"<tr><td>{escape(str(d['job_id'])[:8])}</td><td>{escape(d['region'])}</td>"
        f"<td class=num>{d['attempts']}</td><td>{_when(d['failed_at'])}</td>"
        f'<td class="err">{escape((d["last_error"] or "")[:160])}</td></tr>'
        for d in facts.get("recent_dead_letters", [])
    ]
    return (
        f'<h2>Dead letters <span class="meta">({total}; <code>pgpulse dlq list</code>)</span></h2>'
        + (
            '<div class="scroll"><table id="dead-letters"><tr><th>job</th><th>region</th>'
            "<th class=num>attempts</th><th>failed (UTC)</th><th>last error</th></tr>"
            + "".join(rows)
            + "</table></div>"
            if rows
            else '<p class="ok" id="dead-letters">none</p>'
        )
    )
