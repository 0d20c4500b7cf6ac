"""The portfolio's ranking: mandatory projects first, then by (adjusted) score, ties broken by
key; analysts' pins and adjustments applied on top, each with its justification."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Override:
    kind: Literal["pin", "adjust"]
    justification: str
    author: str
    rank: int | None = None
    delta: float | None = None


@dataclass(frozen=True, slots=True)
class RankEntry:
    key: str
    mandatory: bool
    score: float


def adjusted(score: float, override: Override | None) -> float:
    if override is not None and override.kind == "adjust" and override.delta is not None:
        return round(score + override.delta, 6)
    return score


def rank_rows(
    keys: Sequence[str],
    mandatory: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    ranked: npt.NDArray[np.bool_],
    overrides: Mapping[str, Override],
) -> npt.NDArray[np.int64]:
    """The rank of each row (0 for rows not ``ranked``), rows given in ascending order of
    ``keys``. Scores are taken as given (adjust them first with ``adjusted``). A pinned project
    takes its pinned rank, but never above a mandatory project: a pin to rank 1 in a portfolio
    with two mandatory projects gives rank 3."""
    row_of = {key: i for i, key in enumerate(keys) if key in overrides}
    pins = {
        row: wanted
        for key, row in row_of.items()
        if ranked[row] and overrides[key].kind == "pin" and (wanted := overrides[key].rank)
    }
    free = ranked.copy()
    free[list(pins)] = False
    rows = np.flatnonzero(free)
    # Sorted by mandatory first, then score descending, then key (the rows' own order); +0.0
    # makes -0.0 and 0.0 one value, as they compare in Python.
    order = rows[np.lexsort((rows, -scores[rows] + 0.0, ~mandatory[rows]))].tolist()
    floor = int(np.count_nonzero(mandatory & ranked)) + 1
    for row, wanted in sorted(pins.items(), key=lambda kv: (kv[1], keys[kv[0]])):
        order.insert(min(max(wanted, floor), len(order) + 1) - 1, row)
    result = np.zeros(len(keys), dtype=np.int64)
    result[order] = np.arange(1, len(order) + 1)
    return result


def rank(
    entries: Iterable[RankEntry], overrides: Mapping[str, Override] | None = None
) -> dict[str, int]:
    """Ranks 1..n of ``entries`` by key (see ``rank_rows``). The result does not depend on the
    order the entries arrive in."""
    ordered = sorted(entries, key=lambda e: e.key)
    ranked = rank_rows(
        [e.key for e in ordered],
        np.array([e.mandatory for e in ordered], dtype=np.bool_),
        np.array([e.score for e in ordered], dtype=np.float64),
        np.ones(len(ordered), dtype=np.bool_),
        overrides or {},
    )
    return dict(zip((e.key for e in ordered), ranked.tolist(), strict=True))
