"""Records that carry many projects (``ScoresChanged``, ``PlansChanged``) stand for one event
per project: ``projects()`` gives each entry as that event, however the record was built."""

from __future__ import annotations

from shared.contracts.events import (
    Contribution,
    PlansChanged,
    ProjectPlan,
    ProjectPlanned,
    ProjectScore,
    ProjectScored,
    ScoresChanged,
)

SCORED = ProjectScored(
    project_key="retail/jira/A",
    portfolio="retail",
    project_revision=2,
    ranking_version=7,
    model="m",
    model_version=3,
    score=61.5,
    rank=4,
    mandatory=False,
    explanation=[
        Contribution(criterion="risk", raw=2, normalised=0.5, weight=1, contribution=61.5)
    ],
    cause="project_revision",
)
PLANNED = ProjectPlanned(
    project_key="retail/jira/A",
    portfolio="retail",
    plan_version=5,
    status="planned",
    start_month="2027-03",
    end_month="2027-05",
)


def test_entries_stand_for_the_per_project_events_from_json_and_from_objects() -> None:
    entry = ProjectScore.model_validate(
        SCORED.model_dump(exclude={"portfolio", "ranking_version", "model", "model_version"})
    )
    for scores in ([entry], [SCORED]):  # a ProjectScored is a ProjectScore with more fields
        event = ScoresChanged(
            portfolio="retail", ranking_version=7, model="m", model_version=3, scores=scores
        )
        for built in (event, ScoresChanged.model_validate_json(event.model_dump_json())):
            (one,) = built.projects()
            assert one == SCORED
            assert one.model_dump_json() == SCORED.model_dump_json()
    plan = ProjectPlan.model_validate(PLANNED.model_dump(exclude={"portfolio", "plan_version"}))
    for plans in ([plan], [PLANNED]):
        event = PlansChanged(portfolio="retail", plan_version=5, plans=plans)
        for built in (event, PlansChanged.model_validate_json(event.model_dump_json())):
            assert built.projects() == [PLANNED]
