"""Seeded synthetic portfolios, for benchmarks and property tests: the same seed gives the
same portfolio on every machine."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.capacity.domain.planner import Demand, Horizon, PlanProject, Resource
from shared.contracts.inbound import Stage

ROLES = ("backend", "frontend", "qa", "data", "design", "ops", "security", "mobile")


@dataclass(frozen=True, slots=True)
class Instance:
    projects: list[PlanProject]
    resources: list[Resource]
    horizon: Horizon
    priorities: dict[str, float]


def portfolio(
    projects: int, resources: int, months: int = 24, *, seed: int = 7, load: float = 1.6
) -> Instance:
    """``projects`` candidates (a tenth of them active) competing for ``resources`` teams of
    one role each; total demand is about ``load`` times total capacity, so choices matter."""
    rnd = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    horizon = Horizon(2027 * 12, months)
    team_fte = [rnd.choice((1.0, 2.0, 3.0, 4.0)) for _ in range(resources)]
    team_roles = [ROLES[i % len(ROLES)] for i in range(resources)]
    team = [
        Resource(f"team-{i}", team_roles[i], team_fte[i], horizon.start, None)
        for i in range(resources)
    ]
    capacity_fte_months = sum(team_fte) * months
    per_project = load * capacity_fte_months / projects
    out: list[PlanProject] = []
    priorities: dict[str, float] = {}
    for i in range(projects):
        duration = rnd.randint(2, 8)
        lines = []
        for _ in range(rnd.randint(1, 3)):
            span = rnd.randint(1, duration)
            lines.append(Demand(rnd.choice(ROLES), 0.0, rnd.randint(0, duration - span), span))
        months_total = sum(d.months for d in lines)
        lines = [
            Demand(
                d.role,
                round(max(0.25, per_project / months_total * rnd.uniform(0.5, 1.5)), 2),
                d.offset,
                d.months,
            )
            for d in lines
        ]
        earliest = horizon.start + rnd.randint(0, months // 2)
        slack = rnd.randint(0, months // 2)
        deadline = min(earliest + duration - 1 + slack, horizon.end + 6)
        active = rnd.random() < 0.1
        key = f"synthetic/gen/P{i:05d}"
        deps: tuple[str, ...] = ()
        if i > 10 and rnd.random() < 0.05:
            deps = (f"P{rnd.randint(0, i - 1):05d}",)
        out.append(
            PlanProject(
                key=key,
                external_id=f"P{i:05d}",
                stage=Stage.ACTIVE if active else Stage.PROPOSAL,
                withdrawn=False,
                rank=None,
                earliest_start=earliest,
                deadline=deadline,
                demand=tuple(lines),
                depends_on=deps,
            )
        )
        priorities[key] = round(rnd.uniform(10, 100), 3)
    ranked = sorted(out, key=lambda p: -priorities[p.key])
    ranks = {p.key: n for n, p in enumerate(ranked, start=1)}
    out = [
        PlanProject(
            p.key,
            p.external_id,
            p.stage,
            p.withdrawn,
            ranks[p.key],
            p.earliest_start,
            p.deadline,
            p.demand,
            p.depends_on,
        )
        for p in out
    ]
    return Instance(out, team, horizon, priorities)
