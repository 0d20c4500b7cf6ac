"""Records that carry many projects (``ScoresChanged``, ``PlansChanged``) stand for one event
per project: ``projects()`` gives each entry as that event, however the record was built."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cloudevents import batched_messages
from shared.contracts.events import (
    Contribution,
    PlansChanged,
    ProjectPlan,
    ProjectPlanned,
    ProjectScore,
    ProjectScored,
    ScoresChanged,
)

NOW = datetime(2027, 1, 5, tzinfo=UTC)
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


def _greedy(entries: list[bytes], head: bytes, max_entries: int, max_bytes: int) -> list[bytes]:
    """The packing ``batched_messages`` promises, one entry at a time: a record takes the next
    entry while it has fewer than ``max_entries`` and the entry fits its bytes, or is empty."""
    parts: list[list[bytes]] = []
    for entry in entries:
        if not parts or len(parts[-1]) >= max_entries:
            parts.append([entry])
            continue
        value = head + b",".join([*parts[-1], entry]) + b"]}"
        if len(value) > max_bytes:
            parts.append([entry])
        else:
            parts[-1].append(entry)
    return [head + b",".join(part) + b"]}" for part in parts]


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 120), max_size=60),
    max_entries=st.integers(1, 9),
    max_bytes=st.integers(40, 400),
)
def test_records_are_packed_greedily_by_count_and_bytes(
    lengths: list[int], max_entries: int, max_bytes: int
) -> None:
    empty = PlansChanged(portfolio="p", plan_version=1, plans=[])
    head = b'{"portfolio":"p","plan_version":1,"plans":['
    entries = [b'"' + bytes([97 + i % 26]) * n + b'"' for i, n in enumerate(lengths)]
    messages = batched_messages(
        topic="t",
        key="p",
        empty=empty,
        entries=entries,
        max_entries=max_entries,
        max_bytes=max_bytes,
        event_id="x:1",
        source="t",
        time=NOW,
    )
    assert [m.value for m in messages] == _greedy(entries, head, max_entries, max_bytes)
    assert [m.headers["ce_id"] for m in messages] == [f"x:1:{n}" for n in range(len(messages))]


def test_an_event_whose_last_field_is_not_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="last field"):
        batched_messages(
            topic="t",
            key="p",
            empty=PlansChanged(portfolio="p", plan_version=1, plans=[PLANNED]),
            entries=[b"{}"],
            max_entries=5,
            max_bytes=1000,
            event_id="x:1",
            source="t",
            time=NOW,
        )
