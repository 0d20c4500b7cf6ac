"""The exact portfolio optimiser: which candidates to start, and when, to maximise total
priority under per-role per-month capacity, windows and dependencies — a 0/1 programme solved
with OR-Tools CP-SAT (the choice is measured in docs/planning.md), time-boxed, warm-started from
the greedy plan and LP-guided plans, with the LP relaxation (GLOP) as the bound it is measured
against. Models too large to solve whole in the budget are improved by large-neighbourhood
search: CP-SAT re-solves a few dozen competing projects at a time, the rest fixed.

Variables x[p, s] = 1 when candidate p starts in month s of its window. Constraints:
  Σ_s x[p, s] ≤ 1                                  (start at most once)
  Σ_{p,s} load[p][r][m − s] · x[p, s] ≤ free[r][m]  (capacity left after committed work)
  x[p, s] ≤ Σ_{s' ≤ s − dur(q)} x[q, s']            (p after each candidate dependency q ends)
Objective: Σ w_p · x[p, s], where w_p is the priority (score or value, mandatory projects
first), with a tiny preference for earlier starts.
"""

from services.capacity.domain.optimiser.exact import optimise, solve, starts_of
from services.capacity.domain.optimiser.model import (
    FTE_SCALE,
    MANDATORY_BONUS,
    WEIGHT_SCALE,
    Column,
    Model,
    Result,
    build,
    objective_of,
    violations,
    weight,
)
from services.capacity.domain.optimiser.neighbourhoods import Improvement, improve
from services.capacity.domain.optimiser.relaxation import (
    Relaxation,
    fill,
    heuristics,
    lp_relaxation,
    relaxation,
    solve_highs,
)

__all__ = [
    "FTE_SCALE",
    "MANDATORY_BONUS",
    "WEIGHT_SCALE",
    "Column",
    "Improvement",
    "Model",
    "Relaxation",
    "Result",
    "build",
    "fill",
    "heuristics",
    "improve",
    "lp_relaxation",
    "objective_of",
    "optimise",
    "relaxation",
    "solve",
    "solve_highs",
    "starts_of",
    "violations",
    "weight",
]
