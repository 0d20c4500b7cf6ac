"""Scoring's stored inputs, on real Postgres: what ``save_inputs`` writes in one statement is what
``inputs`` reads back, every field, WSJF's factors (a missing job size too) and their absence
included, and of two changes of a project in one batch the last."""

from __future__ import annotations

import json

import pytest

from services.scoring.domain.inputs import ScoringInputs, Wsjf
from services.scoring.repository import ScoringRepository
from shared.settings import DatabaseSettings
from tests.conftest import service_pool

pytestmark = pytest.mark.integration

PORTFOLIO = "inputs"


def _inputs(key: str, **fields: object) -> ScoringInputs:
    values: dict[str, object] = {
        "key": key,
        "mandatory": False,
        "ranked": True,
        "strategic_fit": {},
        "value": None,
        "cost": None,
        "risk": None,
        "deadline": None,
        "wsjf": None,
        "effort": 0.0,
        **fields,
    }
    return ScoringInputs(**values)  # type: ignore[arg-type]


async def test_saved_inputs_read_back_field_for_field(database: DatabaseSettings) -> None:
    full = _inputs(
        f"{PORTFOLIO}/jira/A",
        mandatory=True,
        strategic_fit={"growth": 0.8, "cost": 0.25},
        value=120000.0,
        cost=45000.5,
        risk=3,
        deadline=24,
        wsjf=Wsjf(business_value=8, time_criticality=5, risk_reduction=2, job_size=13),
        effort=18.5,
    )
    no_size = _inputs(
        f"{PORTFOLIO}/jira/B",
        ranked=False,
        wsjf=Wsjf(business_value=3, time_criticality=1, risk_reduction=1, job_size=None),
    )
    bare = _inputs(f"{PORTFOLIO}/jira/C")
    replaced = _inputs(f"{PORTFOLIO}/jira/C", value=7.0, effort=2.0)
    rows = [
        (i.key, PORTFOLIO, revision, withdrawn, json.dumps({"name": i.key}), i)
        for i, revision, withdrawn in (
            (full, 1, False),
            (no_size, 4, True),
            (bare, 1, False),
            (replaced, 2, False),  # the same project again, later in the batch
        )
    ]
    async with service_pool(database, "scoring", max_size=1) as pool, pool.acquire() as conn:
        async with conn.transaction():
            await ScoringRepository(conn).save_inputs(rows)
        repo = ScoringRepository(conn)
        read = {i.key: i for i in await repo.inputs([full.key, no_size.key, bare.key])}
        revisions = await repo.revisions(read)
        withdrawn = dict(await conn.fetch("SELECT project_key, withdrawn FROM projects"))
        states = dict(await conn.fetch("SELECT project_key, state->>'name' FROM project_states"))
    assert read == {full.key: full, no_size.key: no_size, bare.key: replaced}
    assert revisions == {full.key: 1, no_size.key: 4, bare.key: 2}
    assert withdrawn == {full.key: False, no_size.key: True, bare.key: False}
    assert states == {k: k for k in read}
