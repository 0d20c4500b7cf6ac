"""A replan's moved projects travel many a record (``PlansChanged``), each record the
contract's own serialisation, split when there are many."""

from __future__ import annotations

from datetime import UTC, datetime

from services.capacity.handlers import plans_changed
from services.capacity.repository import StoredPlacement
from shared.contracts.events import Deferral, PlansChanged, ProjectPlan, ProjectPlanned

NOW = datetime(2027, 1, 5, tzinfo=UTC)
DEFERRAL = Deferral(
    code="capacity",
    detail='backend "core" short',
    role="backend",
    month="2027-04",
    shortfall_fte=1.5,
)


def test_a_replans_records_are_the_contracts_json_and_apply_as_project_events() -> None:
    moved = [
        ("pörtfolio/jira/A", StoredPlacement("planned", "2027-02", "2027-06", None)),
        ("pörtfolio/jira/B", StoredPlacement("deferred", None, None, DEFERRAL)),
        ("pörtfolio/jira/C", StoredPlacement("excluded", None, None, None)),
    ]
    (message,) = plans_changed("plans", "pörtfolio", 9, moved, NOW)
    expected = PlansChanged(
        portfolio="pörtfolio",
        plan_version=9,
        plans=[
            ProjectPlan(
                project_key=key,
                status=p.status,  # type: ignore[arg-type]
                start_month=p.start_month,
                end_month=p.end_month,
                deferral=p.deferral,
            )
            for key, p in moved
        ],
    )
    assert message.value == expected.model_dump_json().encode()
    assert message.key == "pörtfolio".encode()
    assert message.headers["ce_type"] == PlansChanged.TYPE
    assert message.headers["ce_id"] == "capacity-plans:pörtfolio:9:0"
    events = PlansChanged.model_validate_json(message.value).projects()
    assert events[1] == ProjectPlanned(
        project_key="pörtfolio/jira/B",
        portfolio="pörtfolio",
        plan_version=9,
        status="deferred",
        deferral=DEFERRAL,
    )


def test_many_moved_projects_are_split_in_order() -> None:
    moved = [
        (f"p/jira/{i:05d}", StoredPlacement("planned", "2027-01", "2027-02", None))
        for i in range(PlansChanged.MAX_PLANS * 2 + 3)
    ]
    messages = plans_changed("plans", "p", 2, moved, NOW)
    events = [PlansChanged.model_validate_json(m.value) for m in messages]
    assert [len(e.plans) for e in events] == [PlansChanged.MAX_PLANS] * 2 + [3]
    assert [p.project_key for e in events for p in e.plans] == [k for k, _ in moved]
    assert len({m.headers["ce_id"] for m in messages}) == 3
    assert all(len(m.value) <= PlansChanged.MAX_BYTES for m in messages)
    assert plans_changed("plans", "p", 3, [], NOW) == []


def test_long_deferrals_split_a_replan_by_size() -> None:
    long = DEFERRAL.model_copy(update={"detail": "x" * 2000})
    moved = [(f"p/jira/{i:05d}", StoredPlacement("deferred", None, None, long)) for i in range(300)]
    messages = plans_changed("plans", "p", 4, moved, NOW)
    assert len(messages) > 1, "300 entries of about 2 KiB exceed one record's budget"
    assert all(len(m.value) <= PlansChanged.MAX_BYTES for m in messages)
    events = [PlansChanged.model_validate_json(m.value) for m in messages]
    assert [p.project_key for e in events for p in e.plans] == [k for k, _ in moved]
