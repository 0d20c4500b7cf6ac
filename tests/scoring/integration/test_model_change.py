"""A scoring model change re-ranks a portfolio end to end: commands from the pmo CLI, through
the real broker, into scoring on real Postgres, out to the reporting API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, publish_json, submission
from tests.system import System, running

pytestmark = pytest.mark.integration


@pytest.fixture
async def system(database: DatabaseSettings, kafka: KafkaSettings) -> AsyncIterator[System]:
    async with running(database, kafka, services=("intake", "scoring")) as system:
        yield system


async def ranking(system: System, want: int = 3) -> list[dict[str, Any]]:
    async def ranked() -> list[dict[str, Any]] | None:
        items = await system.projects("retail")
        return items if len([i for i in items if i["rank"]]) == want else None

    return await eventually(ranked, what=f"{want} ranked projects")


async def order_becomes(system: System, expected: list[str]) -> list[dict[str, Any]]:
    async def reordered() -> list[dict[str, Any]] | None:
        items = await system.projects("retail")
        return items if [i["external_id"] for i in items] == expected else None

    return await eventually(reordered, what=f"ranking {expected}")


async def test_model_change_pin_and_refused_ahp(system: System, tmp_path: Path) -> None:
    await publish_json(
        system.kafka.bootstrap_servers,
        system.topics(Topic.SUBMISSIONS),
        [
            # Great value for money, little strategic fit.
            submission("A", value=9_000_000, cost=100_000, strategic_fit={"growth": 1}, risk=3),
            # Great strategic fit, poor value for money.
            submission("B", value=100_000, cost=900_000, strategic_fit={"growth": 5}, risk=3),
            submission("C", value=500_000, cost=500_000, strategic_fit={"growth": 3}, risk=3),
        ],
    )
    before = await ranking(system)
    assert [i["external_id"] for i in before] == ["A", "B", "C"]
    since = datetime.now(UTC)
    assert {i["model"] for i in before} == {"weighted-default"}

    fit_only = tmp_path / "fit-first.yaml"
    fit_only.write_text(
        "name: fit-first\nmethod: weighted\nweights:\n  strategic_fit: 0.8\n  risk: 0.2\n"
    )
    code, out = await system.pmo(
        "scoring", "set", "retail", str(fit_only), "--comment", "Q1 review"
    )
    assert code == 0, out
    after = await order_becomes(system, ["B", "C", "A"])
    assert {(i["model"], i["model_version"], i["score_cause"]) for i in after} == {
        ("fit-first", 1, "model_change")
    }
    b = after[0]
    assert [c["criterion"] for c in b["explanation"]] == ["strategic_fit", "risk"]
    assert b["score"] == pytest.approx(sum(c["contribution"] for c in b["explanation"]))

    code, out = await system.pmo(
        "scoring",
        "pin",
        "retail",
        "jira/A",
        "--rank",
        "1",
        "--justification",
        "Board mandate 11/26",
    )
    assert code == 0, out
    pinned = await order_becomes(system, ["A", "B", "C"])
    assert pinned[0]["override"] == {
        "kind": "pin",
        "rank": 1,
        "delta": None,
        "justification": "Board mandate 11/26",
        "author": "analyst@test",
    }
    assert pinned[0]["score_cause"] == "override"

    code, out = await system.pmo(
        "scoring", "clear", "retail", "jira/A", "--justification", "Mandate withdrawn"
    )
    assert code == 0, out
    await order_becomes(system, ["B", "C", "A"])

    inconsistent = tmp_path / "ahp.yaml"
    inconsistent.write_text(
        "method: ahp\ncriteria: [strategic_fit, value_for_money, risk]\ncomparisons:\n"
        "  strategic_fit: {value_for_money: 9, risk: 1/9}\n"
        "  value_for_money: {risk: 9}\n"
    )
    code, out = await system.pmo("scoring", "set", "retail", str(inconsistent))
    assert code == 0, out

    async def audit() -> list[dict[str, Any]] | None:
        response = await system.api.get("/api/v1/portfolios/retail/scoring/audit")
        items: list[dict[str, Any]] = response.json()["items"]
        return items if len(items) == 4 else None

    trail = await eventually(audit, what="four audit entries")
    assert [(e["action"], e["outcome"]) for e in trail] == [
        ("set_model", "refused"),
        ("clear_override", "applied"),
        ("pin", "applied"),
        ("set_model", "applied"),
    ]
    assert {e["author"] for e in trail} == {"analyst@test"}
    refusal = trail[0]["detail"]["reasons"][0]
    assert refusal["code"] == "ahp_inconsistent"
    assert "most inconsistent comparison" in refusal["message"]
    # The refused model changed nothing.
    assert [i["model"] for i in await system.projects("retail")] == ["fit-first"] * 3

    code, out = await system.pmo("scoring", "audit", "retail")
    assert code == 0, out
    assert "Mandate withdrawn" in out
    assert "consistency ratio" in out

    code, out = await system.pmo("ranking", "retail", "--explain", "jira/B")
    assert code == 0, out
    assert "strategic_fit" in out
    assert "3 project(s)" in out

    # Since the first ranking: B up one, C up one, A down two; each re-scored.
    code, out = await system.pmo("movement", "retail", "--since", since.isoformat())
    assert code == 0, out
    moved = {
        project: line
        for line in out.splitlines()
        for project in ("A", "B", "C")
        if f"jira/{project} " in line
    }
    assert "-2" in moved["A"], out
    assert "+1" in moved["B"], out
    assert "+1" in moved["C"], out
    assert out.index("jira/B") < out.index("jira/C") < out.index("jira/A"), out
    assert "score" in out
    assert "3 project(s) moved" in out
    code, out = await system.pmo(
        "movement", "retail", "--since", since.isoformat(), "--until", "2000-01-01"
    )
    assert code == 2, out
    assert "until must be at or after since" in out

    # A budget of 1,000,000 down the ranking B (900,000), C (500,000), A (100,000): the line
    # stops at C; filling funds A below it.
    code, out = await system.pmo("funding", "retail", "--budget", "1000000", "--rule", "fill")
    assert code == 0, out
    rows = {p: line for line in out.splitlines() for p in "ABC" if f"jira/{p} " in line}
    assert "yes" in rows["B"], out
    assert "over budget" in rows["C"], out
    assert "yes" in rows["A"], out
    assert "funded: 2 project(s), 1,000,000 EUR, worth 9,100,000" in out
    assert "0 EUR left of 1,000,000 EUR" in out.splitlines(), out
    code, out = await system.pmo("funding", "retail", "--budget", "1000000")
    assert code == 0, out
    assert "below line" in out
    assert "funded: 1 project(s), 900,000 EUR" in out
