"""The portfolio's ranking: mandatory projects first, then by (adjusted) score, ties broken by
key; analysts' pins and adjustments applied on top, each with its justification."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal


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


def rank(
    entries: Iterable[RankEntry], overrides: Mapping[str, Override] | None = None
) -> dict[str, int]:
    """Ranks 1..n. Scores are taken as given (adjust them first with ``adjusted``). A pinned
    project takes its pinned rank, but never above a mandatory project: a pin to rank 1 in a
    portfolio with two mandatory projects gives rank 3. The result does not depend on the
    order the entries arrive in."""
    overrides = overrides or {}
    entries = list(entries)
    pins = {
        e.key: overrides[e.key].rank
        for e in entries
        if e.key in overrides and overrides[e.key].kind == "pin" and overrides[e.key].rank
    }
    order = sorted(
        (e for e in entries if e.key not in pins), key=lambda e: (not e.mandatory, -e.score, e.key)
    )
    floor = sum(1 for e in entries if e.mandatory) + 1
    for key, wanted in sorted(pins.items(), key=lambda kv: (kv[1] or 0, kv[0])):
        position = min(max(wanted or 1, floor), len(order) + 1) - 1
        order.insert(position, next(e for e in entries if e.key == key))
    return {entry.key: position for position, entry in enumerate(order, start=1)}
