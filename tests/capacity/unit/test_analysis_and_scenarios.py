from __future__ import annotations

import pytest

from services.capacity.domain.analysis import conflicts, skill_gaps, utilisation
from services.capacity.domain.planner import Horizon, Resource, plan
from services.capacity.domain.scenarios import ScenarioError, apply, compare
from shared.contracts.capacity import Scenario
from shared.contracts.inbound import Stage
from tests.capacity.unit.test_planner import JAN, project, team

H = Horizon(JAN, 6)


def test_committed_work_over_capacity_is_a_conflict_naming_the_lowest_ranked() -> None:
    projects = [
        project("KEEP", 1, ("be", 2.0, 0, 2), stage=Stage.ACTIVE),
        project("SLIP", 7, ("be", 2.0, 1, 2), stage=Stage.ACTIVE),
    ]
    result = plan(projects, [team("be", 3.0)], H)
    found = conflicts(result, projects, H)
    assert [(c.month - JAN, c.demand, c.capacity) for c in found] == [(1, 4.0, 3.0)]
    assert found[0].projects == ("retail/jira/KEEP", "retail/jira/SLIP")
    assert found[0].suggestion == "delay SLIP, the lowest-ranked of them, or add 1 FTE of be"


def test_utilisation_counts_committed_and_planned_work() -> None:
    projects = [
        project("A", 1, ("be", 1.0, 0, 2), stage=Stage.ACTIVE),
        project("B", 2, ("be", 2.0, 0, 1)),
    ]
    cells = {
        (c.role, c.month - JAN): c
        for c in utilisation(plan(projects, [team("be", 4.0)], H), projects, H)
    }
    assert cells[("be", 0)].demand == 3.0
    assert cells[("be", 0)].utilisation == pytest.approx(0.75)
    assert cells[("be", 1)].demand == 1.0


def test_skill_gaps_include_deferred_demand_and_roles_nobody_has() -> None:
    projects = [project("A", 1, ("ml", 2.0, 0, 1), ("be", 1.0, 0, 1), deadline=JAN + 1)]
    result = plan(projects, [team("be", 5.0)], H)
    assert result.placements["retail/jira/A"].status == "deferred"
    gaps = skill_gaps(result, projects, H)
    assert [(g.role, g.month - JAN, g.gap, g.uncovered) for g in gaps] == [("ml", 0, 2.0, True)]


def _scenario(*changes: dict[str, object]) -> Scenario:
    return Scenario.model_validate({"name": "t", "changes": list(changes)})


def test_a_scenario_changes_a_copy_and_reports_the_difference() -> None:
    projects = [
        project("A", 1, ("be", 2.0, 0, 2), deadline=JAN + 1),
        project("B", 2, ("be", 2.0, 0, 2), deadline=JAN + 1),
    ]
    resources = [team("be", 2.0)]
    base = plan(projects, resources, H)
    changed_projects, changed_resources, _ = apply(
        "retail",
        projects,
        resources,
        _scenario({"kind": "set_priority", "project": "jira/B", "rank": 1}),
        H,
    )
    other = plan(changed_projects, changed_resources, H)
    changes = {c.key: c.change for c in compare(base, other)}
    assert changes == {"retail/jira/A": "deferred", "retail/jira/B": "started"}
    assert base.placements["retail/jira/A"].status == "planned"  # the baseline is untouched
    assert [p.rank for p in projects] == [1, 2]


def test_dropping_adding_and_removing_capacity() -> None:
    projects = [project("A", 1, ("be", 1.0, 0, 1))]
    resources = [team("be", 1.0), Resource("qa-team", "qa", 1.0, JAN, None)]
    new_projects, new_resources, added = apply(
        "retail",
        projects,
        resources,
        _scenario(
            {"kind": "drop_project", "project": "jira/A"},
            {
                "kind": "add_project",
                "external_id": "N",
                "name": "New",
                "priority": 70,
                "demand": [{"role": "qa", "fte": 1, "start_month": 0, "months": 1}],
            },
            {"kind": "remove_capacity", "resource_id": "qa-team"},
        ),
        H,
    )
    assert [p.key for p in new_projects] == ["retail/whatif/N"]
    assert added == {"retail/whatif/N": 70}
    assert [r.resource_id for r in new_resources] == ["be-team"]
    assert plan(new_projects, new_resources, H).placements["retail/whatif/N"].status == "deferred"


def test_a_scenario_naming_an_unknown_project_is_refused() -> None:
    with pytest.raises(ScenarioError) as caught:
        apply("retail", [], [], _scenario({"kind": "drop_project", "project": "jira/NOPE"}), H)
    assert caught.value.reasons[0].code == "unknown_project"
