"""The dashboard: one page per portfolio, rendered on the server (HTML and SVG, no external
assets), refreshed in place when the portfolio changes. The page asks for an API token once and
keeps it in the browser's session storage; every panel request carries it as a bearer token.
An instant picked in its header shows the portfolio as it was then, from the history, until
*Live* is pressed."""

import html
import math
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.reporting.auth import READ, Principal, TokenBook
from services.reporting.reach import HistoryReach
from services.reporting.repository import ProjectFilter, ReadModelQueries
from services.reporting.settings import ReportingSettings

_bearer = HTTPBearer(auto_error=False)
e = html.escape


def _page(portfolio: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pmo · {e(portfolio)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head><body data-portfolio="{e(portfolio)}">
<header><h1>pmo · <span>{e(portfolio)}</span></h1>
<form id="when"><label>As of <input type="datetime-local" id="as-of" step="1"></label>
<button type="button" id="live" disabled>Live</button></form>
<span id="status">connecting…</span></header>
<main id="panels"><p>Loading…</p></main>
<script src="/dashboard/static/dashboard.js"></script>
</body></html>"""


def _cell_colour(utilisation: float | None) -> str:
    if utilisation is None:
        return "#e5e7eb"
    if utilisation > 1.0 + 1e-9:
        return "#dc2626"
    if utilisation >= 0.85:
        return "#f59e0b"
    if utilisation > 0:
        return "#16a34a"
    return "#dcfce7"


def ranking_panel(items: list[dict[str, Any]]) -> str:
    rows = []
    for i in items:
        override = i.get("override") or {}
        badge = f' <span class="badge">{e(override["kind"])}</span>' if override else ""
        plan = e(i.get("plan_status") or "")
        if i.get("start_month"):
            plan += f" {e(i['start_month'])}–{e(i['end_month'] or '')}"
        score = f"{i['score']:.1f}" if i.get("score") is not None else ""
        rows.append(
            f'<tr data-project="{e(i["project_key"])}"><td>{i.get("rank") or "–"}</td>'
            f"<td>{e(i.get('external_id') or '')}</td><td>{e(i.get('name') or '')}{badge}</td>"
            f"<td>{e(i.get('stage') or '')}</td><td class=num>{score}</td>"
            f'<td class="plan {e(i.get("plan_status") or "")}">{plan}</td></tr>'
        )
    return (
        '<section id="ranking"><h2>Ranking</h2><table><thead><tr><th>#</th><th>Project</th>'
        "<th>Name</th><th>Stage</th><th>Score</th><th>Plan</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def heatmap_panel(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return '<section id="heatmap"><h2>Capacity</h2><p>No plan yet.</p></section>'
    months = sorted({c["month"] for c in cells})
    roles = sorted({c["role"] for c in cells})
    by = {(c["role"], c["month"]): c for c in cells}
    head = "".join(f"<th>{e(m[2:])}</th>" for m in months)
    body = []
    for role in roles:
        tds = []
        for month in months:
            c = by.get((role, month), {"capacity": 0.0, "demand": 0.0})
            u = c["demand"] / c["capacity"] if c["capacity"] > 0 else None
            label = f"{role} {month}: demand {c['demand']:g} of {c['capacity']:g} FTE"
            tds.append(
                f'<td class="cell" style="background:{_cell_colour(u)}" title="{e(label)}"'
                f' data-utilisation="{"" if u is None else round(u, 3)}"></td>'
            )
        body.append(f"<tr><th>{e(role)}</th>{''.join(tds)}</tr>")
    return (
        '<section id="heatmap"><h2>Capacity by role and month</h2><table class="heat">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="legend"><span style="background:#16a34a"></span>under 85 %'
        '<span style="background:#f59e0b"></span>85–100 %'
        '<span style="background:#dc2626"></span>over capacity</p></section>'
    )


def scatter_panel(items: list[dict[str, Any]]) -> str:
    """Value (log scale) against risk; dot size by score, colour by plan status."""
    width, height, pad = 520, 320, 40
    points = [i for i in items if i.get("value") is not None and i.get("risk") is not None]
    colours = {"planned": "#2563eb", "committed": "#0f766e", "deferred": "#dc2626"}
    logs = [math.log10(1 + i["value"]) for i in points]
    low, high = (min(logs), max(logs)) if logs else (0.0, 1.0)
    span = (high - low) or 1.0
    dots = []
    for i, log_value in zip(points, logs, strict=True):
        x = pad + (i["risk"] - 1) / 4 * (width - 2 * pad)
        # Lowest value at 10 % of the height, highest at 90 %.
        y = height - pad - (0.1 + 0.8 * (log_value - low) / span) * (height - 2 * pad)
        r = 4 + (i.get("score") or 0) / 100 * 10
        colour = colours.get(i.get("plan_status") or "", "#6b7280")
        tip = f"{i.get('external_id')} {i.get('name')}: value {i['value']:,.0f}, risk {i['risk']}"
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{colour}" fill-opacity="0.7">'
            f"<title>{e(tip)}</title></circle>"
        )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"'
        ' stroke="#333"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>'
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">risk (1–5)</text>'
        f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})"'
        ' text-anchor="middle">value (log)</text>'
    )
    return (
        '<section id="scatter"><h2>Value versus risk</h2>'
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="value versus risk">'
        f"{axes}{''.join(dots)}</svg></section>"
    )


def conflicts_panel(conflicts: list[dict[str, Any]]) -> str:
    items = "".join(
        f"<li><b>{e(c['role'])} {e(c['month'])}</b>: committed {c['demand']:g} FTE of "
        f"{c['capacity']:g} — {e(', '.join(p.rsplit('/', 1)[-1] for p in c['projects']))}. "
        f"<i>{e(c['suggestion'])}</i></li>"
        for c in conflicts
    )
    return (
        '<section id="conflicts"><h2>Conflicts</h2>'
        + (f"<ul>{items}</ul>" if items else "<p>None.</p>")
        + "</section>"
    )


def deferred_panel(items: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<li><b>{e(i.get('external_id') or '')}</b> {e(i.get('name') or '')}: "
        f"{e((i.get('deferral') or {}).get('detail', ''))}</li>"
        for i in items
    )
    return (
        '<section id="deferred"><h2>Deferred, and why</h2>'
        + (f"<ul>{rows}</ul>" if rows else "<p>None.</p>")
        + "</section>"
    )


def movement_panel(items: list[dict[str, Any]], total: int) -> str:
    """What has moved since the instant shown: rank gained or lost, and what else changed."""
    rows = []
    for i in items:
        gained = i["rank_gained"]
        arrow = "" if not gained else (f"▲{gained}" if gained > 0 else f"▼{-gained}")
        if i["change"] != "changed":  # added, withdrawn, ...: that says it
            what = [i["change"]]
        else:
            what = [c.replace("_", " ") for c in i["changed"] if c != "rank"]
            if "rank" in i["changed"] and gained is None:
                what.insert(0, "ranked" if i["rank_before"] is None else "unranked")
        rows.append(
            f'<tr data-project="{e(i["project_key"])}"><td>{i["rank_after"] or "–"}</td>'
            f"<td class=num>{arrow}</td><td>{e(i.get('external_id') or '')}</td>"
            f"<td>{e(i.get('name') or '')}</td><td>{e(', '.join(what))}</td></tr>"
        )
    more = f"<p>{total - len(items)} more.</p>" if total > len(items) else ""
    return (
        '<section id="movement"><h2>Since then</h2>'
        + (
            "<table><thead><tr><th>#</th><th>Moved</th><th>Project</th><th>Name</th>"
            "<th>Changed</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows
            else "<p>Nothing has moved.</p>"
        )
        + more
        + "</section>"
    )


def dashboard_router(
    settings: ReportingSettings, queries: Callable[[], ReadModelQueries]
) -> APIRouter:
    tokens = TokenBook(settings.api_token.get_secret_value(), settings.api_tokens)
    router = APIRouter(prefix="/dashboard", include_in_schema=False)
    reach = HistoryReach(settings, queries)

    def reader(
        portfolio: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        who = tokens.find(credentials.credentials) if credentials else None
        if who is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token required")
        # A NUL cannot be in any stored portfolio id (nor may it reach the database).
        if READ not in who.scopes or not who.can_see(portfolio) or "\x00" in portfolio:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such portfolio")
        return who

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        kinds = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
        if name not in kinds:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        body = (resources.files("services.reporting") / "static" / name).read_text()
        return Response(body, media_type=kinds[name])

    @router.get("/{portfolio}")
    async def page(portfolio: str) -> HTMLResponse:
        return HTMLResponse(_page(portfolio))

    @router.get("/{portfolio}/panels")
    async def panels(
        portfolio: str,
        who: Annotated[Principal, Depends(reader)],
        as_of: Annotated[datetime | None, Depends(reach)],
    ) -> HTMLResponse:
        """The panels, now or, with ``as_of``, as they were then (within the kept history),
        with what has moved since then first."""
        q = queries()
        _total, items = await q.projects(portfolio, limit=200, offset=0, as_of=as_of)
        _total, deferred = await q.projects(
            portfolio,
            limit=200,
            offset=0,
            as_of=as_of,
            filters=ProjectFilter(plan_status="deferred"),
        )
        summary = await q.summary(portfolio, as_of) or {"utilisation": [], "conflicts": []}
        since = ""
        if as_of is not None:
            total, _now, moved = await q.movement(
                portfolio, since=as_of, until=None, limit=200, offset=0
            )
            since = movement_panel(moved, total)
        return HTMLResponse(
            since
            + ranking_panel(items)
            + heatmap_panel(summary["utilisation"])
            + scatter_panel(items)
            + conflicts_panel(summary["conflicts"])
            + deferred_panel(deferred)
        )

    return router
