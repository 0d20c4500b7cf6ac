"""``pmo scoring …``, ``pmo ranking`` and ``pmo movement``: analysts' commands and views of the
ranking."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.cli.publishing import publish
from shared.contracts.scoring import SCORING_COMMAND
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames

app = typer.Typer(no_args_is_help=True, help="Set scoring models and overrides.")
console = Console()

Author = Annotated[str | None, typer.Option(help="Who makes the change (default: the login name).")]
Comment = Annotated[str, typer.Option(help="Why, for the audit trail.")]
Why = Annotated[str, typer.Option(help="The justification (at least 10 characters).")]


def _send(portfolio: str, action: str, author: str | None, comment: str, **fields: Any) -> None:
    command = {
        "command_id": str(uuid.uuid4()),
        "portfolio": portfolio,
        "author": author or os.environ.get("PMO_AUTHOR") or getpass.getuser(),
        "issued_at": datetime.now(UTC).isoformat(),
        "comment": comment,
        "action": action,
        **fields,
    }
    body = json.dumps(command).encode()
    try:
        SCORING_COMMAND.validate_json(body)  # the service checks again; this is for quick feedback
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            console.print(f"[red]{'.'.join(map(str, error['loc']))}[/red]: {error['msg']}")
        raise typer.Exit(2) from exc
    kafka = KafkaSettings()
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORING_COMMANDS)
    asyncio.run(publish(kafka, [(topic, portfolio.encode(), body, [])]))
    console.print(f"{action} sent for {portfolio} (command {command['command_id']})")


def _key(portfolio: str, project: str) -> str:
    if project.count("/") != 1:
        raise typer.BadParameter("give the project as source/external_id, e.g. jira/PRJ-42")
    return f"{portfolio}/{project}"


@app.command("set")
def set_model(
    portfolio: str,
    model_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    author: Author = None,
    comment: Comment = "",
) -> None:
    """Use the model in MODEL_FILE (YAML or JSON) for PORTFOLIO: a new model version, and the
    whole portfolio rescored. An AHP model that is too inconsistent is refused."""
    document = yaml.safe_load(model_file.read_text())
    if not isinstance(document, dict):
        raise typer.BadParameter("the model file must hold a mapping")
    envelope = {
        "name": document.pop("name", model_file.stem),
        "description": document.pop("description", ""),
        "model": document,
    }
    _send(portfolio, "set_model", author, comment, model=envelope)


@app.command()
def pin(
    portfolio: str,
    project: str,
    rank: Annotated[int, typer.Option(min=1)],
    justification: Why,
    author: Author = None,
) -> None:
    """Hold PROJECT (source/external_id) at RANK."""
    _send(
        portfolio,
        "pin",
        author,
        "",
        project_key=_key(portfolio, project),
        rank=rank,
        justification=justification,
    )


@app.command()
def adjust(
    portfolio: str,
    project: str,
    by: Annotated[float, typer.Option(help="Points added to the score (negative lowers it).")],
    justification: Why,
    author: Author = None,
) -> None:
    """Add points to PROJECT's score."""
    _send(
        portfolio,
        "adjust",
        author,
        "",
        project_key=_key(portfolio, project),
        delta=by,
        justification=justification,
    )


@app.command()
def clear(portfolio: str, project: str, justification: Why, author: Author = None) -> None:
    """Remove PROJECT's pin or adjustment."""
    _send(
        portfolio,
        "clear_override",
        author,
        "",
        project_key=_key(portfolio, project),
        justification=justification,
    )


@app.command()
def rescore(portfolio: str, author: Author = None, comment: Comment = "") -> None:
    """Rescore the whole portfolio now."""
    _send(portfolio, "rescore", author, comment)


def api_get(path: str, **params: Any) -> Any:
    base = os.environ.get("PMO_API_URL", "http://127.0.0.1:8080")
    token = os.environ.get("PMO_API_TOKEN", "")
    response = httpx.get(
        f"{base}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    if response.status_code in (401, 403):
        console.print("[red]not authorised: set PMO_API_TOKEN[/red]")
        raise typer.Exit(2)
    if response.status_code == 422:  # the request's fault: say which parameter, and why
        try:
            errors = response.json().get("detail", [])
        except ValueError:  # not the API's own answer (a proxy's, say)
            errors = [{"loc": ["request"], "msg": response.text}]
        for error in errors:
            console.print(f"[red]{escape(str(error['loc'][-1]))}[/red]: {escape(error['msg'])}")
        raise typer.Exit(2)
    response.raise_for_status()
    return response.json()


def ranking(
    portfolio: str,
    explain: Annotated[
        str | None, typer.Option(help="Explain one project (source/external_id).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """The portfolio's ranking (from the reporting API: PMO_API_URL, PMO_API_TOKEN)."""
    page = api_get(f"/api/v1/portfolios/{portfolio}/projects", limit=limit)
    table = Table("rank", "project", "name", "stage", "score", "override", "plan")
    for item in page["items"]:
        override = item.get("override") or {}
        shown = ""
        if override:
            value = override.get("rank") if override["kind"] == "pin" else override.get("delta")
            shown = f"{override['kind']} {value}"
        plan = item.get("plan_status") or ""
        if item.get("start_month"):
            plan += f" {item['start_month']}..{item['end_month']}"
        table.add_row(
            str(item["rank"] or "-"),
            escape(f"{item['source']}/{item['external_id']}"),
            escape(item["name"] or ""),
            item["stage"] or "",
            f"{item['score']:.2f}" if item["score"] is not None else "",
            shown,
            plan,
        )
    console.print(table)
    console.print(f"{page['total']} project(s)")
    if explain:
        key = _key(portfolio, explain)
        found = [i for i in page["items"] if i["project_key"] == key]
        if not found:
            console.print(f"[red]{explain} is not in the first {limit} projects[/red]")
            raise typer.Exit(1)
        item = found[0]
        detail = Table("criterion", "raw", "normalised", "weight", "contribution", title=key)
        for c in item.get("explanation") or []:
            detail.add_row(
                c["criterion"],
                "" if c["raw"] is None else f"{c['raw']:g}",
                f"{c['normalised']:.3f}",
                f"{c['weight']:.3f}",
                f"{c['contribution']:.3f}",
            )
        console.print(detail)
        if item.get("override"):
            o = item["override"]
            console.print(f"override by {escape(o['author'])}: {escape(o['justification'])}")


def movement(
    portfolio: str,
    since: Annotated[
        str, typer.Option(help="The earlier instant, ISO 8601 (UTC without an offset).")
    ],
    until: Annotated[str | None, typer.Option(help="The later instant (default: now).")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """What has moved in the portfolio since an instant: projects added, withdrawn, re-ranked,
    re-scored or re-planned (from the reporting API: PMO_API_URL, PMO_API_TOKEN)."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    if until is not None:
        params["until"] = until
    page = api_get(f"/api/v1/portfolios/{portfolio}/movement", **params)
    table = Table("rank", "moved", "project", "name", "how", "changed")
    for item in page["items"]:
        gained = item["rank_gained"]
        table.add_row(
            str(item["rank_after"] or "-"),
            f"{gained:+d}" if gained else "",
            escape(f"{item['source']}/{item['external_id']}"),
            escape(item["name"] or ""),
            item["change"],
            ", ".join(item["changed"]),
        )
    console.print(table)
    shown = "" if page["total"] <= len(page["items"]) else f", the first {len(page['items'])} shown"
    console.print(
        f"{page['total']} project(s) moved from {page['since']} to {page['until']}{shown}"
    )


def funding(
    portfolio: str,
    budget: Annotated[float, typer.Option(min=0, help="The money to fund the ranking with.")],
    currency: Annotated[
        str | None, typer.Option(help="The budget's currency (default: the ranking's).")
    ] = None,
    rule: Annotated[
        str,
        typer.Option(help="line: down to the first that does not fit; fill: all that fit."),
    ] = "line",
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """How far down the ranking a budget reaches: the funding line, the projects on each side
    of it and the mandatory ones left out (from the reporting API: PMO_API_URL, PMO_API_TOKEN)."""
    params: dict[str, Any] = {"budget": budget, "rule": rule, "limit": limit}
    if currency is not None:
        params["currency"] = currency
    page = api_get(f"/api/v1/portfolios/{portfolio}/funding", **params)
    money = f" {page['currency']}" if page["currency"] else ""
    table = Table("rank", "project", "name", "cost", "cumulative", "funded")
    for item in page["items"]:
        cost = item["cost"]
        table.add_row(
            str(item["rank"]),
            escape(f"{item['source']}/{item['external_id']}"),
            escape(item["name"] or ""),
            f"{cost:,.0f}" if cost is not None else "-",
            f"{item['cumulative_cost']:,.0f}",
            "yes" if item["funded"] else item["reason"].replace("_", " "),
        )
    console.print(table)
    funded, unfunded = page["funded"], page["unfunded"]
    console.print(
        f"funded: {funded['projects']} project(s), {funded['cost']:,.0f}{money},"
        f" worth {funded['value']:,.0f}"
    )
    console.print(f"not funded: {unfunded['projects']}, worth {unfunded['value']:,.0f}")
    console.print(f"{page['remaining']:,.0f}{money} left of {page['budget']:,.0f}{money}")
    if page["mandatory_unfunded"]:
        console.print(
            f"[bold red]{page['mandatory_unfunded']} mandatory project(s) not funded[/bold red]"
        )
    if page["total"] > len(page["items"]):
        console.print(f"the first {len(page['items'])} of {page['total']} ranked projects shown")


@app.command()
def audit(portfolio: str, limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """Who changed the portfolio's scoring, what, why, and whether it was applied."""
    page = api_get(f"/api/v1/portfolios/{portfolio}/scoring/audit", limit=limit)
    table = Table("at", "author", "action", "outcome", "detail", "comment")
    for e in page["items"]:
        detail = e["detail"]
        shown = (
            "; ".join(r["message"] for r in detail.get("reasons", []))
            or detail.get("justification")
            or (f"model version {detail['model_version']}" if "model_version" in detail else "")
        )
        table.add_row(
            e["at"],
            escape(e["author"]),
            e["action"],
            e["outcome"],
            escape(shown),
            escape(e["comment"]),
        )
    console.print(table)
