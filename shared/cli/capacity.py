"""``pmo capacity …``: what-if scenarios and exact optimisation, answered by the capacity
service through Kafka."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shared.broker import client_options
from shared.cli.publishing import partitions_of, publish
from shared.contracts.capacity import CAPACITY_REQUEST, ScenarioResult
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames

app = typer.Typer(no_args_is_help=True, help="What-if scenarios and portfolio optimisation.")
console = Console()


async def request(body: dict[str, Any], wait_seconds: float) -> ScenarioResult:
    """Publish a request and wait for its answer on the scenarios topic."""
    (result,) = await requests([body], wait_seconds)
    return result


async def requests(bodies: list[dict[str, Any]], wait_seconds: float) -> list[ScenarioResult]:
    """Publish requests (of one portfolio) together and wait for all their answers on the
    scenarios topic; the answers in the requests' order."""
    kafka = KafkaSettings()
    names = TopicNames(kafka.topic_prefix)
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        topic = names(Topic.SCENARIOS)
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # fix the starting point before the request goes out
            await consumer.position(tp)
        await publish(
            kafka,
            [
                (
                    names(Topic.CAPACITY_COMMANDS),
                    body["portfolio"].encode(),
                    json.dumps(body).encode(),
                    [],
                )
                for body in bodies
            ],
        )
        answers: dict[str, ScenarioResult] = {}
        wanted = {body["request_id"] for body in bodies}
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and wanted - answers.keys():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    result = ScenarioResult.model_validate_json(record.value)
                    if result.request_id in wanted:
                        answers[result.request_id] = result
        if missing := sorted(wanted - answers.keys()):
            console.print(
                f"[red]no answer within {wait_seconds:.0f}s[/red] (requests {', '.join(missing)});"
                " check `pmo deadletters list --consumer capacity`"
            )
            raise typer.Exit(1)
        return [answers[body["request_id"]] for body in bodies]
    finally:
        await consumer.stop()


def _body(portfolio: str, action: str, author: str | None, **fields: Any) -> dict[str, Any]:
    body = {
        "request_id": str(uuid.uuid4()),
        "portfolio": portfolio,
        "author": author or os.environ.get("PMO_AUTHOR") or getpass.getuser(),
        "issued_at": datetime.now(UTC).isoformat(),
        "action": action,
        **fields,
    }
    try:
        CAPACITY_REQUEST.validate_json(json.dumps(body))
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            console.print(f"[red]{'.'.join(map(str, error['loc']))}[/red]: {error['msg']}")
        raise typer.Exit(2) from exc
    return body


def show(result: ScenarioResult) -> None:
    console.print(
        f"[bold]{result.name}[/bold]: {result.started} started, {result.deferred} deferred, "
        f"{result.moved} moved"
    )
    if result.optimiser:
        o = result.optimiser
        console.print(
            f"optimiser ({o.solver}, {o.status}, {o.seconds:.1f}s): objective {o.objective:g}, "
            f"greedy plan {o.greedy_objective:g}, bound {o.bound:g}, LP bound {o.lp_bound:g}, "
            f"gap {o.gap:.1%}"
        )
        if o.budget is not None:
            over = " (over it)" if (o.greedy_cost or 0.0) > o.budget else ""
            console.print(
                f"budget {o.budget:,.0f}: the optimiser's plan starts candidates costing"
                f" {o.cost or 0.0:,.0f}, the greedy plan {o.greedy_cost or 0.0:,.0f}{over}"
            )
    table = Table("project", "change", "plan", "scenario")
    for d in result.projects:

        def shown(p: Any) -> str:
            if p is None:
                return "-"
            when = f" {p.start_month}..{p.end_month}" if p.start_month else ""
            return f"{p.status}{when}"

        table.add_row(d.project_key, d.change, shown(d.baseline), shown(d.scenario))
    console.print(table)
    if result.utilisation:
        cells = Table("role", "month", "capacity", "demand before", "demand after")
        for c in result.utilisation:
            capacity = f"{c.capacity_before:g}"
            if c.capacity_after != c.capacity_before:
                capacity += f" -> {c.capacity_after:g}"
            cells.add_row(c.role, c.month, capacity, f"{c.demand_before:g}", f"{c.demand_after:g}")
        console.print(cells)


@app.command()
def whatif(
    portfolio: str,
    scenario_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    author: Annotated[str | None, typer.Option()] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate SCENARIO_FILE (YAML: name, changes) against PORTFOLIO's plan, on a copy."""
    scenario = yaml.safe_load(scenario_file.read_text())
    result = asyncio.run(request(_body(portfolio, "whatif", author, scenario=scenario), timeout))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        show(result)


@app.command("optimise")
def optimise_command(
    portfolio: str,
    objective: Annotated[str, typer.Option(help="score or value")] = "score",
    time_limit: Annotated[float, typer.Option(help="Solver time budget in seconds.")] = 10,
    budget: Annotated[
        float | None,
        typer.Option(help="The most the candidates started may cost in all."),
    ] = None,
    author: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Solve PORTFOLIO's plan exactly and compare it with the greedy plan, project by project;
    with --budget, within it."""
    body = _body(
        portfolio,
        "optimise",
        author,
        objective=objective,
        time_limit_seconds=time_limit,
        budget=budget,
    )
    result = asyncio.run(request(body, time_limit + 60))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        show(result)


@app.command()
def frontier(
    portfolio: str,
    budget: Annotated[
        list[float],
        typer.Option(help="A budget to optimise within; give several (--budget 1e6 --budget 2e6)."),
    ],
    objective: Annotated[str, typer.Option(help="score or value")] = "value",
    time_limit: Annotated[float, typer.Option(help="Solver seconds for each budget.")] = 10,
    author: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """The efficient frontier: the best plan within each budget, and with none, side by side
    (what each step of money buys, and where more stops buying anything)."""
    budgets: list[float | None] = [*sorted(set(budget)), None]
    bodies = [
        _body(
            portfolio,
            "optimise",
            author,
            objective=objective,
            time_limit_seconds=time_limit,
            budget=b,
        )
        for b in budgets
    ]
    # Capacity answers one request after another: each takes up to its time limit.
    results = asyncio.run(requests(bodies, len(bodies) * time_limit + 60))
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
        return
    best = results[-1].optimiser
    assert best is not None
    table = Table("budget", f"objective ({objective})", "of the best", "spent", "status", "gap")
    for b, result in zip(budgets, results, strict=True):
        o = result.optimiser
        assert o is not None
        share = o.objective / best.objective if best.objective else 1.0
        table.add_row(
            f"{b:,.0f}" if b is not None else "none",
            f"{o.objective:,.2f}",
            f"{share:.1%}",
            f"{o.cost or 0.0:,.0f}",
            o.status,
            f"{o.gap:.1%}",
        )
    console.print(table)
    console.print(
        f"the greedy plan: objective {best.greedy_objective:,.2f}, spending"
        f" {best.greedy_cost or 0.0:,.0f} on the candidates it starts"
    )
