"""Capacity planning rules. Pure: months are integers (see ``month_index``), no clock.

The greedy plan: committed (active) projects consume capacity first, whatever it costs; then
candidates in rank order — a dependency is always decided before the projects that need it —
each placed at the earliest start inside its window that fits every role's remaining capacity
in every month, or deferred with the reason.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from shared.contracts.common import month_from_index
from shared.contracts.events import Deferral
from shared.contracts.inbound import Stage

EPSILON = 1e-9
CANDIDATE_STAGES = frozenset({Stage.IDEA, Stage.PROPOSAL, Stage.APPROVED})


@dataclass(frozen=True, slots=True)
class Resource:
    resource_id: str
    role: str
    fte: float
    start: int
    end: int | None
    exceptions: Mapping[int, float] = field(default_factory=dict)

    def fte_in(self, month: int) -> float:
        if month < self.start or (self.end is not None and month > self.end):
            return 0.0
        return self.exceptions.get(month, self.fte)


@dataclass(frozen=True, slots=True)
class Demand:
    role: str
    fte: float
    offset: int
    months: int


@dataclass(frozen=True, slots=True)
class PlanProject:
    key: str
    external_id: str
    stage: Stage
    withdrawn: bool
    rank: int | None
    earliest_start: int | None
    deadline: int | None
    demand: tuple[Demand, ...]
    depends_on: tuple[str, ...] = ()
    mandatory: bool = False
    # Worked out on first use and kept with the project (it is immutable): a replan and its
    # analysis ask for each project's load four times. Not part of equality or the hash.
    _load: Mapping[tuple[str, int], float] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _cells: tuple[LoadCell, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def duration(self) -> int:
        return max((d.offset + d.months for d in self.demand), default=1)

    def load(self) -> Mapping[tuple[str, int], float]:
        """FTE per (role, month offset from the start), demand lines of one role added up.
        Read-only, and kept with the project once worked out."""
        if self._load is not None:
            return self._load
        total: dict[tuple[str, int], float] = defaultdict(float)
        for d in self.demand:
            for offset in range(d.offset, d.offset + d.months):
                total[(d.role, offset)] += d.fte
        load = MappingProxyType(dict(total))
        object.__setattr__(self, "_load", load)
        return load

    def cells(self) -> tuple[LoadCell, ...]:
        """The load as cells in the order a shortfall is looked for (``load_cells``), kept
        with the project once worked out."""
        if self._cells is not None:
            return self._cells
        cells = tuple(load_cells(self.load()))
        object.__setattr__(self, "_cells", cells)
        return cells


@dataclass(frozen=True, slots=True)
class Placement:
    status: str  # committed | planned | deferred | excluded
    start: int | None = None
    end: int | None = None
    deferral: Deferral | None = None


@dataclass(frozen=True, slots=True)
class Horizon:
    start: int
    months: int

    @property
    def end(self) -> int:
        return self.start + self.months - 1

    def __contains__(self, month: int) -> bool:
        return self.start <= month <= self.end


def capacity(resources: Iterable[Resource], horizon: Horizon) -> dict[str, list[float]]:
    """FTE available per role and month of the horizon."""
    result: dict[str, list[float]] = defaultdict(lambda: [0.0] * horizon.months)
    for r in resources:
        row = result[r.role]
        for h in range(horizon.months):
            row[h] += r.fte_in(horizon.start + h)
    return dict(result)


@dataclass(slots=True)
class Plan:
    placements: dict[str, Placement]
    capacity: dict[str, list[float]]
    remaining: dict[str, list[float]]


# One cell of a project's load: (month offset from its start, role, FTE).
LoadCell = tuple[int, str, float]


def load_cells(load: Mapping[tuple[str, int], float]) -> list[LoadCell]:
    """A project's load as cells in the order a shortfall is looked for: by month, then role."""
    return sorted((offset, role, fte) for (role, offset), fte in load.items())


class _Ledger:
    """Remaining capacity per role and horizon month."""

    def __init__(self, capacity: Mapping[str, list[float]], horizon: Horizon) -> None:
        self.horizon = horizon
        self.remaining = {role: list(row) for role, row in capacity.items()}

    def first_shortfall(
        self, cells: Sequence[LoadCell], start: int
    ) -> tuple[str, int, float] | None:
        """The first cell of a project's load (``load_cells``: by month, then role) that does
        not fit when it starts at ``start``, as (role, month, shortfall); None if all fits.
        The cells are sorted once per project, not once per start tried."""
        months = self.horizon.months
        first = start - self.horizon.start
        remaining = self.remaining
        for offset, role, fte in cells:
            i = first + offset
            if 0 <= i < months:
                row = remaining.get(role)
                free = row[i] if row is not None else 0.0
                if free + EPSILON < fte:
                    return role, start + offset, fte - free
        return None

    def take(self, cells: Iterable[LoadCell], start: int) -> None:
        """Take a project's load (its cells, in any order) from the months it falls in."""
        months = self.horizon.months
        first = start - self.horizon.start
        for offset, role, fte in cells:
            i = first + offset
            if 0 <= i < months:
                row = self.remaining.get(role)
                if row is None:
                    row = self.remaining[role] = [0.0] * months
                row[i] -= fte


def _order(
    candidates: list[PlanProject], by_external: Mapping[str, PlanProject]
) -> tuple[list[PlanProject], list[PlanProject]]:
    """Rank order, except that a candidate's candidate dependencies come first; returns the
    order and the candidates caught in a dependency cycle."""
    candidate_keys = {p.key for p in candidates}
    priority = {p.key: (p.rank is None, p.rank or 0, p.key) for p in candidates}
    waiting_on: dict[str, set[str]] = {}
    needed_by: dict[str, list[str]] = defaultdict(list)
    for p in candidates:
        deps = {
            by_external[d].key
            for d in p.depends_on
            if d in by_external
            and by_external[d].key in candidate_keys
            and by_external[d].key != p.key
        }
        waiting_on[p.key] = deps
        for d in deps:
            needed_by[d].append(p.key)
    by_key = {p.key: p for p in candidates}
    ready = [priority[k] for k, deps in waiting_on.items() if not deps]
    heapq.heapify(ready)
    order: list[PlanProject] = []
    while ready:
        key = heapq.heappop(ready)[2]
        order.append(by_key[key])
        for dependant in needed_by[key]:
            waiting_on[dependant].discard(key)
            if not waiting_on[dependant]:
                heapq.heappush(ready, priority[dependant])
    placed = {p.key for p in order}
    cycle = sorted((p for p in candidates if p.key not in placed), key=lambda p: priority[p.key])
    return order, cycle


def plan(projects: Iterable[PlanProject], resources: Iterable[Resource], horizon: Horizon) -> Plan:
    projects = list(projects)
    cap = capacity(resources, horizon)
    ledger = _Ledger(cap, horizon)
    placements: dict[str, Placement] = {}
    by_external = {p.external_id: p for p in projects}
    candidates = []
    for p in projects:
        if p.withdrawn or p.stage not in CANDIDATE_STAGES | {Stage.ACTIVE}:
            placements[p.key] = Placement("excluded")
        elif p.stage == Stage.ACTIVE:
            start = p.earliest_start if p.earliest_start is not None else horizon.start
            ledger.take(p.cells(), start)
            placements[p.key] = Placement("committed", start, start + p.duration - 1)
        else:
            candidates.append(p)
    order, cycle = _order(candidates, by_external)
    for p in cycle:
        placements[p.key] = Placement(
            "deferred",
            deferral=Deferral(code="dependency_cycle", detail="its dependencies form a cycle"),
        )
    for p in order:
        placements[p.key] = _place(p, by_external, placements, ledger, horizon)
    return Plan(placements, cap, ledger.remaining)


def _place(
    p: PlanProject,
    by_external: Mapping[str, PlanProject],
    placements: Mapping[str, Placement],
    ledger: _Ledger,
    horizon: Horizon,
) -> Placement:
    after = horizon.start
    for dep_id in p.depends_on:
        dep = by_external.get(dep_id)
        if dep is None or dep.key == p.key or dep.stage == Stage.DONE:
            continue  # unknown to this portfolio, or finished: nothing to wait for
        dep_placement = placements.get(dep.key)
        if dep_placement is None or dep_placement.end is None:
            status = dep_placement.status if dep_placement else "unknown"
            return Placement(
                "deferred",
                deferral=Deferral(
                    code="dependency", detail=f"depends on {dep_id}, which is {status}"
                ),
            )
        after = max(after, dep_placement.end + 1)
    lo = max(after, p.earliest_start if p.earliest_start is not None else after)
    hi = p.deadline - p.duration + 1 if p.deadline is not None else horizon.end
    hi = min(hi, horizon.end)
    if lo > hi:
        return Placement(
            "deferred",
            deferral=Deferral(
                code="window",
                detail=(
                    f"no start between {month_from_index(lo)} and {month_from_index(hi)} "
                    f"for a {p.duration}-month project"
                ),
            ),
        )
    cells = p.cells()
    first: tuple[str, int, float] | None = None
    for start in range(lo, hi + 1):
        short = ledger.first_shortfall(cells, start)
        if short is None:
            ledger.take(cells, start)
            return Placement("planned", start, start + p.duration - 1)
        first = first or short
    assert first is not None
    role, month, shortfall = first
    return Placement(
        "deferred",
        deferral=Deferral(
            code="capacity",
            role=role,
            month=month_from_index(month),
            shortfall_fte=round(shortfall, 6),
            detail=(
                f"{role} is short by {shortfall:g} FTE in {month_from_index(month)} at the "
                f"earliest start, and no later start up to {month_from_index(hi)} fits"
            ),
        ),
    )
