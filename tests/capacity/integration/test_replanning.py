"""Capacity end to end through the real broker and Postgres: a resource change re-plans the
portfolio; what-if scenarios and the optimiser answer through the pmo command line."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, publish_json, publish_raw, submission
from tests.system import System, running

pytestmark = pytest.mark.integration


@pytest.fixture
async def system(database: DatabaseSettings, kafka: KafkaSettings) -> AsyncIterator[System]:
    async with running(database, kafka, services=("intake", "scoring", "capacity")) as system:
        yield system


def resource(fte: float, revision: int) -> tuple[bytes, bytes]:
    body = {
        "update_id": str(uuid.uuid4()),
        "portfolio": "retail",
        "resource_id": "team-be",
        "revision": revision,
        "action": "upsert",
        "name": "Backend team",
        "role": "backend",
        "fte": fte,
        "from": "2027-01",
        "until": None,
        "exceptions": [],
    }
    return b"retail/team-be", json.dumps(body).encode()


async def statuses(system: System, expected: dict[str, str]) -> list[dict[str, Any]]:
    async def reached() -> list[dict[str, Any]] | None:
        items = await system.projects("retail")
        got = {i["external_id"]: i["plan_status"] for i in items}
        return items if got == expected else None

    return await eventually(reached, what=f"plan {expected}")


async def test_resource_change_replans_and_whatif_and_optimise_answer(
    system: System, tmp_path: Path
) -> None:
    await publish_raw(
        system.kafka.bootstrap_servers, system.topics(Topic.RESOURCES), [resource(2, 1)]
    )
    window = {"earliest_start": "2027-01", "deadline": "2027-03"}
    await publish_json(
        system.kafka.bootstrap_servers,
        system.topics(Topic.SUBMISSIONS),
        [
            submission(
                "RUN",
                stage="active",
                **window,
                demand=[{"role": "backend", "fte": 1, "start_month": 0, "months": 3}],
            ),
            submission(
                "BIG",
                value=9_000_000,
                **window,
                demand=[{"role": "backend", "fte": 2, "start_month": 0, "months": 3}],
            ),
            submission(
                "SMALL",
                value=1_000_000,
                **window,
                demand=[{"role": "backend", "fte": 1, "start_month": 0, "months": 3}],
            ),
        ],
    )
    items = await statuses(system, {"RUN": "committed", "BIG": "deferred", "SMALL": "planned"})
    big = next(i for i in items if i["external_id"] == "BIG")
    assert big["deferral"]["code"] == "capacity"
    assert big["deferral"]["role"] == "backend"
    assert big["deferral"]["shortfall_fte"] == 1.0

    # What if we hired two more backend developers? Evaluated on a copy.
    scenario = tmp_path / "hire.yaml"
    scenario.write_text(
        "name: hire two\nchanges:\n  - kind: add_capacity\n    role: backend\n    fte: 2\n"
    )
    code, out = await system.pmo("capacity", "whatif", "retail", str(scenario), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["started"] == 1
    assert [(p["project_key"], p["change"]) for p in result["projects"]] == [
        ("retail/jira/BIG", "started")
    ]
    assert {c["capacity_after"] - c["capacity_before"] for c in result["utilisation"]} == {2.0}
    # The baseline did not move.
    await statuses(system, {"RUN": "committed", "BIG": "deferred", "SMALL": "planned"})

    # The optimiser proves the greedy plan optimal here: beside the committed work BIG cannot
    # fit in any month of its window, whatever else is dropped.
    code, out = await system.pmo("capacity", "optimise", "retail", "--time-limit", "5", "--json")
    assert code == 0, out
    optimised = json.loads(out)
    assert optimised["optimiser"]["status"] == "optimal"
    assert optimised["optimiser"]["objective"] == optimised["optimiser"]["greedy_objective"]
    assert optimised["projects"] == []
    assert optimised["optimiser"]["gap"] == 0

    # Within a budget of 200,000, SMALL (250,000) cannot be paid for: the best plan within it
    # starts nothing new, against the greedy plan's 250,000 (the committed RUN not counted).
    code, out = await system.pmo(
        "capacity", "optimise", "retail", "--time-limit", "5", "--budget", "200000", "--json"
    )
    assert code == 0, out
    within = json.loads(out)
    report = within["optimiser"]
    assert (report["budget"], report["cost"], report["greedy_cost"]) == (200_000, 0, 250_000)
    assert report["status"] == "optimal"
    assert [(p["project_key"], p["change"]) for p in within["projects"]] == [
        ("retail/jira/SMALL", "deferred")
    ]
    code, out = await system.pmo(
        "capacity", "optimise", "retail", "--time-limit", "5", "--budget", "300000"
    )
    assert code == 0, out
    assert "budget 300,000: the optimiser's plan starts candidates costing 250,000" in out
    # The frontier: 200,000 buys nothing, 300,000 buys SMALL, and no budget buys no more.
    code, out = await system.pmo(
        "capacity",
        "frontier",
        "retail",
        "--budget",
        "300000",
        "--budget",
        "200000",
        "--time-limit",
        "2",
        "--json",
    )
    assert code == 0, out
    steps = [(r["optimiser"]["budget"], r["optimiser"]["cost"]) for r in json.loads(out)]
    assert steps == [(200_000, 0), (300_000, 250_000), (None, 250_000)]
    values = [r["optimiser"]["objective"] for r in json.loads(out)]
    assert values[0] < values[1] == values[2]
    code, out = await system.pmo(
        "capacity", "frontier", "retail", "--budget", "200000", "--time-limit", "2"
    )
    assert code == 0, out
    assert "none" in out
    assert "100.0%" in out

    # The same question through the API, as the dashboard asks it.
    asked = await system.api.post(
        "/api/v1/portfolios/retail/scenarios",
        json={
            "scenario": {
                "name": "hire two",
                "changes": [{"kind": "add_capacity", "role": "backend", "fte": 2}],
            }
        },
    )
    assert asked.status_code == 202
    request_id = asked.json()["request_id"]

    via_api = await eventually(
        lambda: system.scenario_done("retail", request_id),
        what="the scenario answered through the API",
    )
    assert via_api["result"]["started"] == 1
    assert via_api["result"]["author"] == "admin"
    # A budget is for the optimiser alone.
    refused = await system.api.post(
        "/api/v1/portfolios/retail/scenarios",
        json={
            "scenario": {
                "name": "hire one",
                "changes": [{"kind": "add_capacity", "role": "backend", "fte": 1}],
            },
            "budget": 1,
        },
    )
    assert refused.status_code == 422
    assert "a budget is for optimise: true" in refused.text
    asked = await system.api.post(
        "/api/v1/portfolios/retail/scenarios",
        json={"optimise": True, "budget": 200_000, "time_limit_seconds": 5},
    )
    assert asked.status_code == 202
    budgeted = await eventually(
        lambda: system.scenario_done("retail", asked.json()["request_id"]),
        what="the optimiser within a budget answered through the API",
    )
    assert budgeted["result"]["optimiser"]["budget"] == 200_000
    assert budgeted["result"]["optimiser"]["cost"] == 0

    # The real thing: the team grows, and the plan follows.
    await publish_raw(
        system.kafka.bootstrap_servers, system.topics(Topic.RESOURCES), [resource(4, 2)]
    )
    await statuses(system, {"RUN": "committed", "BIG": "planned", "SMALL": "planned"})


def _replans() -> float:
    """Replans so far in this process (the capacity service runs in the test's process)."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("pmo_replan_seconds_count", {"service": "capacity"})
    return value or 0.0


async def test_a_burst_of_a_thousand_updates_costs_a_handful_of_replans(system: System) -> None:
    await publish_raw(
        system.kafka.bootstrap_servers, system.topics(Topic.RESOURCES), [resource(50, 1)]
    )

    async def planned_portfolio() -> bool:
        response = await system.api.get("/api/v1/portfolios/retail/capacity")
        return response.json()["plan_version"] is not None

    await eventually(planned_portfolio, what="the first plan")
    before = _replans()
    burst = [
        submission(
            f"B{i:04d}", demand=[{"role": "backend", "fte": 0.5, "start_month": 0, "months": 2}]
        )
        for i in range(1000)
    ]
    await publish_json(system.kafka.bootstrap_servers, system.topics(Topic.SUBMISSIONS), burst)

    async def all_planned() -> bool:
        items = await system.projects("retail", limit=1000)
        return len(items) == 1000 and all(i["plan_status"] for i in items)

    await eventually(all_planned, within=120, what="a thousand projects planned")
    replans = _replans() - before
    # Batches only mark the portfolio as due; the replanner replans it once however many
    # batches marked it meanwhile: a few dozen replans at most, not thousands.
    assert 1 <= replans <= 60, replans

    gaps = await system.api.get("/api/v1/portfolios/retail/skill-gaps")
    assert gaps.status_code == 200
    assert gaps.json()["plan_version"] is not None


async def test_an_invalid_resource_update_is_dead_lettered_with_reasons(system: System) -> None:
    bad = {
        "update_id": str(uuid.uuid4()),
        "portfolio": "retail",
        "resource_id": "team-x",
        "revision": 1,
        "role": "backend",
        "fte": -2,
        "from": "2027-13",
    }
    await publish_raw(
        system.kafka.bootstrap_servers,
        system.topics(Topic.RESOURCES),
        [(b"retail/team-x", json.dumps(bad).encode())],
    )

    async def recorded() -> list[Any] | None:
        rows = await system.runtimes["reporting"].pool.fetch(
            "SELECT consumer, reasons FROM dead_letters WHERE record_key = 'retail/team-x'"
        )
        return rows or None

    (row,) = await eventually(recorded, what="the dead letter")
    assert row["consumer"] == "capacity"
    paths = {r["path"] for r in json.loads(row["reasons"])}
    assert {"fte", "from"} <= paths
