"""What-if scenarios: the portfolio changed on a copy, planned again, and compared with the
baseline. Pure; the baseline is never touched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from services.capacity.domain.analysis import Cell, utilisation
from services.capacity.domain.planner import (
    Demand,
    Horizon,
    Placement,
    Plan,
    PlanProject,
    Resource,
)
from shared.contracts.capacity import (
    AddCapacity,
    AddProject,
    DropProject,
    RemoveCapacity,
    Scenario,
    SetPriority,
    SetWindow,
)
from shared.contracts.common import month_index
from shared.errors import Reason


class ScenarioError(ValueError):
    def __init__(self, reasons: list[Reason]) -> None:
        super().__init__("; ".join(r.message for r in reasons))
        self.reasons = reasons


def _rerank(projects: list[PlanProject], key: str, wanted: int) -> list[PlanProject]:
    """Move ``key`` to rank ``wanted`` and renumber the others in their order."""
    ranked = sorted(
        (p for p in projects if p.rank is not None or p.key == key),
        key=lambda p: (p.key != key and p.rank is None, p.rank or 0, p.key),
    )
    moving = next(p for p in ranked if p.key == key)
    ranked.remove(moving)
    ranked.insert(min(wanted, len(ranked) + 1) - 1, moving)
    ranks = {p.key: n for n, p in enumerate(ranked, start=1)}
    return [replace(p, rank=ranks.get(p.key, p.rank)) for p in projects]


def apply(
    portfolio: str,
    projects: Sequence[PlanProject],
    resources: Sequence[Resource],
    scenario: Scenario,
    horizon: Horizon,
) -> tuple[list[PlanProject], list[Resource], dict[str, float]]:
    """The scenario's copy of the portfolio, and the priorities of projects it adds."""
    out_projects = list(projects)
    out_resources = list(resources)
    added: dict[str, float] = {}

    def find(ref: str, index: int) -> PlanProject:
        key = f"{portfolio}/{ref}"
        for p in out_projects:
            if p.key == key:
                return p
        raise ScenarioError(
            [
                Reason(
                    "unknown_project",
                    f"no project {ref} in {portfolio}",
                    f"changes.{index}.project",
                )
            ]
        )

    for index, change in enumerate(scenario.changes):
        if isinstance(change, AddCapacity):
            out_resources.append(
                Resource(
                    f"whatif-{index}",
                    change.role,
                    change.fte,
                    month_index(change.from_) if change.from_ else horizon.start,
                    month_index(change.until) if change.until else None,
                )
            )
        elif isinstance(change, RemoveCapacity):
            if change.resource_id is not None:
                before = len(out_resources)
                out_resources = [r for r in out_resources if r.resource_id != change.resource_id]
                if len(out_resources) == before:
                    raise ScenarioError(
                        [
                            Reason(
                                "unknown_resource",
                                f"no resource {change.resource_id} in {portfolio}",
                                f"changes.{index}.resource_id",
                            )
                        ]
                    )
            elif change.role is not None and change.fte is not None:
                out_resources.append(
                    Resource(
                        f"whatif-{index}",
                        change.role,
                        -change.fte,
                        month_index(change.from_) if change.from_ else horizon.start,
                        month_index(change.until) if change.until else None,
                    )
                )
            else:
                raise ScenarioError(
                    [
                        Reason(
                            "incomplete_change",
                            "remove_capacity needs a resource_id, or a role and fte",
                            f"changes.{index}",
                        )
                    ]
                )
        elif isinstance(change, SetPriority):
            out_projects = _rerank(out_projects, find(change.project, index).key, change.rank)
        elif isinstance(change, SetWindow):
            target = find(change.project, index)
            out_projects = [
                replace(
                    p,
                    earliest_start=month_index(change.earliest_start)
                    if change.earliest_start
                    else p.earliest_start,
                    deadline=month_index(change.deadline) if change.deadline else p.deadline,
                )
                if p.key == target.key
                else p
                for p in out_projects
            ]
        elif isinstance(change, DropProject):
            target = find(change.project, index)
            out_projects = [p for p in out_projects if p.key != target.key]
        elif isinstance(change, AddProject):
            key = f"{portfolio}/{change.source}/{change.external_id}"
            new = PlanProject(
                key=key,
                external_id=change.external_id,
                stage=change.stage,
                withdrawn=False,
                rank=None,
                earliest_start=month_index(change.earliest_start)
                if change.earliest_start
                else None,
                deadline=month_index(change.deadline) if change.deadline else None,
                demand=tuple(Demand(d.role, d.fte, d.start_month, d.months) for d in change.demand),
                depends_on=tuple(change.depends_on),
                mandatory=change.mandatory,
            )
            out_projects = [p for p in out_projects if p.key != key] + [new]
            added[key] = change.priority
            if change.rank is not None:
                out_projects = _rerank(out_projects, key, change.rank)
    return out_projects, out_resources, added


@dataclass(frozen=True, slots=True)
class ProjectChange:
    key: str
    change: str  # started | deferred | moved | added | dropped
    baseline: Placement | None
    scenario: Placement | None


def _started(p: Placement | None) -> bool:
    return p is not None and p.status in ("planned", "committed")


def compare(
    baseline: Plan,
    scenario: Plan,
) -> list[ProjectChange]:
    """Every project whose fate differs between the two plans."""
    changes = []
    for key in sorted(set(baseline.placements) | set(scenario.placements)):
        before, after = baseline.placements.get(key), scenario.placements.get(key)
        if before is None:
            change = "added"
        elif after is None:
            change = "dropped"
        elif _started(after) and not _started(before):
            change = "started"
        elif _started(before) and not _started(after):
            change = "deferred"
        elif _started(before) and before.start != after.start:
            change = "moved"
        else:
            continue
        changes.append(ProjectChange(key, change, before, after))
    return changes


def utilisation_changes(
    baseline: Plan,
    base_projects: Sequence[PlanProject],
    scenario: Plan,
    scenario_projects: Sequence[PlanProject],
    horizon: Horizon,
) -> list[tuple[Cell, Cell]]:
    """(before, after) for every role and month whose capacity or demand differs."""
    before = {(c.role, c.month): c for c in utilisation(baseline, base_projects, horizon)}
    after = {(c.role, c.month): c for c in utilisation(scenario, scenario_projects, horizon)}
    out = []
    for cell in sorted(set(before) | set(after)):
        b = before.get(cell) or Cell(cell[0], cell[1], 0.0, 0.0)
        a = after.get(cell) or Cell(cell[0], cell[1], 0.0, 0.0)
        if abs(a.capacity - b.capacity) > 1e-9 or abs(a.demand - b.demand) > 1e-9:
            out.append((b, a))
    return out


def priorities_of(
    projects: Sequence[PlanProject], scores: Mapping[str, float], added: Mapping[str, float]
) -> dict[str, float]:
    return {p.key: added.get(p.key, scores.get(p.key, 0.0)) for p in projects}
