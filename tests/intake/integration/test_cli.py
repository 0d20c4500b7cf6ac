"""`pmo import` and `pmo deadletters`, run as a user runs them, against the real broker and an
intake service on real Postgres."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.intake.app import build
from shared.migrations import migrate, service_component
from shared.runtime import ServiceRuntime
from shared.settings import DatabaseSettings, KafkaSettings
from tests.helpers import eventually
from tests.system import run_pmo

pytestmark = pytest.mark.integration


async def pmo(kafka: KafkaSettings, *args: str) -> tuple[int, str]:
    return await run_pmo(kafka, "", *args)


@pytest.fixture
async def intake(database: DatabaseSettings, kafka: KafkaSettings) -> AsyncIterator[ServiceRuntime]:
    await migrate(database.url, [service_component("intake")])
    async with build(kafka=kafka, database=database) as runtime:
        yield runtime


async def _outcomes(intake: ServiceRuntime, n: int) -> list[tuple[str, str | None, str]]:
    async def logged() -> list[tuple[str, str | None, str]] | None:
        rows = await intake.pool.fetch(
            "SELECT project_key, code, outcome FROM submission_log ORDER BY id"
        )
        return (
            [(r["project_key"], r["code"], r["outcome"]) for r in rows] if len(rows) >= n else None
        )

    return await eventually(logged, what=f"{n} submissions logged")


async def test_import_then_replay_a_dead_letter_after_the_cause_is_fixed(
    intake: ServiceRuntime, kafka: KafkaSettings, tmp_path: Path
) -> None:
    csv_file = tmp_path / "projects.csv"
    csv_file.write_text(
        "portfolio,source,external_id,revision,name,stage,value,cost,strategic_fit,demand,depends_on\n"
        "retail,sheet,A,1,Alpha,proposal,100,50,growth:4,backend:1:0:2,B\n"
        "retail,sheet,B,1,Beta,proposal,lots,50,,,\n"
        "retail,sheet,C,1,Gamma,someday,100,50,,,\n"
        ",sheet,D,1,Delta,idea,,,,,\n"
    )
    code, out = await pmo(kafka, "import", str(csv_file))
    assert code == 1, out
    assert "line 3: value: 'lots' is not a number" in out
    assert "line 5: missing portfolio" in out
    assert "2 submission(s) published" in out
    assert sorted(await _outcomes(intake, 2), key=str) == [
        ("retail/sheet/A", None, "accepted"),
        ("retail/sheet/C", "enum", "refused"),
    ]

    # B depends on A while A depends on B: refused as a cycle.
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "portfolio": "retail",
                "source": "sheet",
                "external_id": "B",
                "revision": 1,
                "project": {"name": "Beta", "stage": "idea", "depends_on": ["A"]},
            }
        )
        + "\nnot json\n"
    )
    code, out = await pmo(kafka, "import", str(jsonl))
    assert "line 2: not JSON" in out
    await _outcomes(intake, 3)

    code, out = await pmo(kafka, "deadletters", "list", "--code", "dependency_cycle")
    assert code == 0, out
    assert "1 dead letter(s)" in out
    assert "B -> A -> B" in out
    position = next(
        line.split("│")[1].strip() for line in out.splitlines() if "dependency_cycle" in line
    )
    code, out = await pmo(kafka, "deadletters", "inspect", position)
    assert code == 0, out
    assert f"dead letter {position}" in out
    assert "refused by  intake" in out
    assert "dependency_cycle" in out
    assert "pmo_dlq_source_topic = " in out
    assert "key: retail/sheet/B" in out
    assert '"external_id": "B"' in out  # the original value, as sent
    code, out = await pmo(kafka, "deadletters", "inspect", "99:999999")
    assert code == 1
    assert "no dead letter at 99:999999" in out

    # The cause is fixed upstream (A no longer depends on B); the refused record is replayed.
    fixed = tmp_path / "a.jsonl"
    fixed.write_text(
        json.dumps(
            {
                "portfolio": "retail",
                "source": "sheet",
                "external_id": "A",
                "revision": 2,
                "project": {"name": "Alpha", "stage": "proposal"},
            }
        )
        + "\n"
    )
    assert (await pmo(kafka, "import", str(fixed)))[0] == 0
    await _outcomes(intake, 4)
    code, out = await pmo(kafka, "deadletters", "replay", "--code", "dependency_cycle")
    assert code == 0, out
    assert "1 record(s) replayed" in out
    outcomes = await _outcomes(intake, 5)
    assert outcomes[-1] == ("retail/sheet/B", None, "accepted")


async def test_topics_status_shows_the_groups_committed_positions(
    intake: ServiceRuntime, kafka: KafkaSettings, tmp_path: Path
) -> None:
    rows = tmp_path / "p.jsonl"
    rows.write_text(
        "".join(
            json.dumps(
                {
                    "portfolio": "retail",
                    "source": "s",
                    "external_id": f"X{i}",
                    "revision": 1,
                    "project": {"name": f"X {i}"},
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    assert (await pmo(kafka, "import", str(rows)))[0] == 0
    await _outcomes(intake, 5)

    async def committed() -> str | None:
        code, out = await pmo(kafka, "topics", "status")
        assert code == 0, out
        lines = [line for line in out.splitlines() if "pmo-intake" in line]  # reads one topic
        cells = lines[0].split("│") if lines else []
        return out if cells and cells[5].strip() == "5" else None  # the committed column

    await eventually(committed, what="pmo-intake's committed offsets to reach 5")
