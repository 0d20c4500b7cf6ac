"""Scoring's SQL."""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from asyncpg.pool import PoolConnectionProxy

from services.scoring.domain.inputs import InputColumns, ScoringInputs, Wsjf
from services.scoring.domain.ranking import Override
from shared.contracts.scoring import ModelEnvelope, ScoringAudit
from shared.db import COPY_ABOVE, unnest_arguments, upsert_rows
from shared.uow import PostgresUnitOfWork


@dataclass(frozen=True, slots=True)
class PortfolioState:
    ranking_version: int
    model_version: int
    model: ModelEnvelope | None
    as_of_month: int | None
    # When the moves of projects only pushed along the ranking are to be published; None when
    # the published ranking is the computed one.
    ranks_due_at: datetime | None = None
    # Drawn by the transaction that last changed the portfolio's rows (migration 0007).
    rows_token: int = 0
    # The latest the pending moves may wait, set when the first of them went pending; None
    # with none pending (migration 0008).
    ranks_settle_by: datetime | None = None


@dataclass(frozen=True, slots=True)
class PortfolioRows:
    """A portfolio's projects as the ranking sees them, one array per column, rows in
    ascending order of key (Python's order: by code point). Unknown numbers are NaN, no rank
    is 0. ``inputs`` are the projects' scoring inputs in the same rows, when asked for."""

    keys: list[str]
    revision: npt.NDArray[np.int64]
    mandatory: npt.NDArray[np.bool_]
    ranked: npt.NDArray[np.bool_]
    score: npt.NDArray[np.float64]
    published_score: npt.NDArray[np.float64]
    published_rank: npt.NDArray[np.int64]
    published_override: dict[str, str]  # key -> OverrideInfo JSON, of the few that have one
    inputs: InputColumns | None

    def position(self, key: str) -> int | None:
        """The row of the project keyed ``key``, if it is one of them."""
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else None

    def revised(self, saved: Mapping[str, tuple[int, bool, bool]]) -> PortfolioRows:
        """These rows as ``save_inputs`` leaves them: ``saved`` maps each project it wrote to
        its (revision, mandatory, ranked); a new project enters in key order with score 0 and
        nothing published. Without inputs."""
        revision, mandatory, ranked = (
            self.revision.copy(),
            self.mandatory.copy(),
            self.ranked.copy(),
        )
        new: list[str] = []
        for key, (rev, must, ranks) in saved.items():
            i = self.position(key)
            if i is None:
                new.append(key)
            else:
                revision[i], mandatory[i], ranked[i] = rev, must, ranks
        new.sort()
        keys = self.keys
        score, published_score, published_rank = (
            self.score,
            self.published_score,
            self.published_rank,
        )
        if new:
            at = [bisect_left(self.keys, key) for key in new]  # before these old rows
            keys = []
            start = 0
            for key, i in zip(new, at, strict=True):
                keys += self.keys[start:i]
                keys.append(key)
                start = i
            keys += self.keys[start:]
            revision = np.insert(revision, at, [saved[k][0] for k in new])
            mandatory = np.insert(mandatory, at, [saved[k][1] for k in new])
            ranked = np.insert(ranked, at, [saved[k][2] for k in new])
            score = np.insert(score, at, 0.0)
            published_score = np.insert(published_score, at, np.nan)
            published_rank = np.insert(published_rank, at, 0)
        return replace(
            self,
            keys=keys,
            revision=revision,
            mandatory=mandatory,
            ranked=ranked,
            score=score,
            published_score=published_score,
            published_rank=published_rank,
            inputs=None,
        )

    def saved(
        self,
        score: npt.NDArray[np.float64],
        published: Sequence[int],
        ranks: npt.NDArray[np.int64],
        final: npt.NDArray[np.float64],
        overrides: Mapping[str, str],
    ) -> PortfolioRows:
        """These rows as ``save_results`` leaves them: every project's ``score``, and the rows
        at ``published`` published with their rank, final score and override JSON (a project
        absent from ``overrides`` has none). Without inputs."""
        published_score = self.published_score.copy()
        published_rank = self.published_rank.copy()
        published_score[published] = final[published]
        published_rank[published] = ranks[published]
        published_override = dict(self.published_override)
        for i in published:
            key = self.keys[i]
            if key in overrides:
                published_override[key] = overrides[key]
            else:
                published_override.pop(key, None)
        return replace(
            self,
            score=score,
            published_score=published_score,
            published_rank=published_rank,
            published_override=published_override,
            inputs=None,
        )


def _inputs(r: Any) -> ScoringInputs:
    w = r["wsjf"]
    return ScoringInputs(
        key=r["project_key"],
        mandatory=r["mandatory"],
        ranked=r["ranked"],
        strategic_fit=json.loads(r["strategic_fit"]),
        value=r["value"],
        cost=r["cost"],
        risk=r["risk"],
        deadline=r["deadline"],
        wsjf=Wsjf(w[0], w[1], w[2], w[3]) if w else None,
        effort=r["effort"],
    )


_INPUT_COLUMNS = (
    "project_key, mandatory, ranked, strategic_fit, value, cost, risk, deadline, wsjf, effort"
)

# One row of arrays, one per column: asyncpg decodes an array in one call, where a row per
# project costs a Python record each (a 100,000-project portfolio is read on every rescore).
# The aggregates of one query all take its rows in one order; Python sorts them by key.
_ROWS = (
    "SELECT array_agg(project_key) AS keys, array_agg(revision) AS revision,"
    " array_agg(mandatory) AS mandatory, array_agg(ranked) AS ranked,"
    " array_agg(score) AS score, array_agg(published_score) AS published_score,"
    " array_agg(published_rank) AS published_rank,"
    " array_agg(project_key) FILTER (WHERE published_override IS NOT NULL) AS overridden,"
    " array_agg(published_override::text) FILTER (WHERE published_override IS NOT NULL)"
    " AS published_override{inputs}"
    " FROM projects WHERE portfolio = $1"
)
_ROW_INPUTS = (
    ", json_agg(strategic_fit) AS strategic_fit, array_agg(value) AS value,"
    " array_agg(cost) AS cost, array_agg(risk) AS risk, array_agg(deadline) AS deadline,"
    " array_agg(wsjf[1]) AS wsjf1, array_agg(wsjf[2]) AS wsjf2, array_agg(wsjf[3]) AS wsjf3,"
    " array_agg(wsjf[4]) AS wsjf4, array_agg(effort) AS effort"
)


# Up to this many staged rows are emptied with DELETE, more with TRUNCATE (save_results).
_STAGE_DELETE_MAX = 5000

# What a staged result row changes: the score, the published ranking, or both.
_SCORED, _PUBLISHED, _BOTH = 1, 2, 3
_SET_SCORE = "score = s.score"
_SET_PUBLISHED = (
    "published_rank = s.rank, published_score = s.published_score,"
    " published_override = s.published_override::json"
)
_APPLY = {
    kind: f"UPDATE projects p SET {sets} FROM scores_stage s"
    f" WHERE p.project_key = s.project_key AND s.kind = {kind}"
    for kind, sets in (
        (_SCORED, _SET_SCORE),
        (_PUBLISHED, _SET_PUBLISHED),
        (_BOTH, f"{_SET_SCORE}, {_SET_PUBLISHED}"),
    )
}
# A batch's changed projects' scoring inputs (``save_inputs``), inserted or overwritten; WSJF's
# four factors come as four columns, since ``unnest`` flattens an array of arrays.
_SAVED_INPUT_COLUMNS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("revision", "bigint"),
    ("withdrawn", "boolean"),
    ("mandatory", "boolean"),
    ("ranked", "boolean"),
    ("strategic_fit", "text"),
    ("value", "float8"),
    ("cost", "float8"),
    ("risk", "int"),
    ("deadline", "int"),
    ("business_value", "float8"),
    ("time_criticality", "float8"),
    ("risk_reduction", "float8"),
    ("job_size", "float8"),
    ("effort", "float8"),
)
_SAVE_INPUTS = (
    "INSERT INTO projects (project_key, portfolio, revision, withdrawn, mandatory, ranked,"
    " score, strategic_fit, value, cost, risk, deadline, wsjf, effort)"
    " SELECT t.project_key, t.portfolio, t.revision, t.withdrawn, t.mandatory, t.ranked, 0,"
    " t.strategic_fit::jsonb, t.value, t.cost, t.risk, t.deadline,"
    " CASE WHEN t.business_value IS NOT NULL THEN ARRAY[t.business_value, t.time_criticality,"
    " t.risk_reduction, t.job_size] END, t.effort"
    " FROM unnest({arrays}) AS t (project_key, portfolio, revision, withdrawn, mandatory, ranked,"
    " strategic_fit, value, cost, risk, deadline, business_value, time_criticality,"
    " risk_reduction, job_size, effort)"
    " ON CONFLICT (project_key) DO UPDATE SET revision = excluded.revision,"
    " withdrawn = excluded.withdrawn, mandatory = excluded.mandatory,"
    " ranked = excluded.ranked, strategic_fit = excluded.strategic_fit,"
    " value = excluded.value, cost = excluded.cost, risk = excluded.risk,"
    " deadline = excluded.deadline, wsjf = excluded.wsjf, effort = excluded.effort,"
    " updated_at = now()"
)
_STAGE_COLUMNS = (
    ("project_key", "text"),
    ("kind", "int"),
    ("score", "float8"),
    ("rank", "int"),
    ("published_score", "float8"),
    ("published_override", "text"),
)
# The same for a few rows, in one statement: each row keeps the columns its kind does not set.
_APPLY_FEW = (
    "UPDATE projects p SET"
    f" score = CASE WHEN s.kind & {_SCORED} <> 0 THEN s.score ELSE p.score END,"
    f" published_rank = CASE WHEN s.kind & {_PUBLISHED} <> 0 THEN s.rank"
    " ELSE p.published_rank END,"
    f" published_score = CASE WHEN s.kind & {_PUBLISHED} <> 0 THEN s.published_score"
    " ELSE p.published_score END,"
    f" published_override = CASE WHEN s.kind & {_PUBLISHED} <> 0"
    " THEN s.published_override::json ELSE p.published_override END"
    " FROM unnest({arrays}) AS s (project_key, kind, score, rank, published_score,"
    " published_override) WHERE p.project_key = s.project_key"
)


def _floats(values: list[float | None] | None) -> npt.NDArray[np.float64]:
    """A float column, NULL as NaN."""
    return np.array(values or [], dtype=np.float64)


_STATE = (
    "SELECT true AS present, p.ranking_version, p.model_version, p.as_of_month,"
    " p.ranks_due_at, p.rows_token, p.ranks_settle_by, m.name, m.spec"
    " FROM portfolios p LEFT JOIN models m ON m.portfolio = p.portfolio"
    " AND m.version = p.model_version WHERE p.portfolio = $1"
)
_OVERRIDE_COLUMNS = ("project_key", "kind", "rank", "delta", "justification", "author")
# The state (its columns NULL for a portfolio without one yet) beside one array per override
# column: the aggregate always makes a row.
_STATE_AND_OVERRIDES = (
    f"SELECT s.*, {', '.join(f'o.{c}' for c in _OVERRIDE_COLUMNS)} FROM"
    f" (SELECT {', '.join(f'array_agg({c}) AS {c}' for c in _OVERRIDE_COLUMNS)}"
    " FROM overrides WHERE portfolio = $1) o"
    f" LEFT JOIN ({_STATE}) s ON true"
)


def _state(row: Any) -> PortfolioState:
    if row is None:
        return PortfolioState(0, 0, None, None)
    model = (
        ModelEnvelope.model_validate({"name": row["name"], "model": json.loads(row["spec"])})
        if row["spec"]
        else None
    )
    return PortfolioState(
        row["ranking_version"],
        row["model_version"],
        model,
        row["as_of_month"],
        row["ranks_due_at"],
        row["rows_token"],
        row["ranks_settle_by"],
    )


class ScoringRepository:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def revisions(self, keys: Iterable[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT project_key, revision FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return {r["project_key"]: r["revision"] for r in rows}

    async def save_inputs(
        self, rows: Sequence[tuple[str, str, int, bool, str, ScoringInputs]]
    ) -> None:
        """(key, portfolio, revision, withdrawn, state JSON, inputs) of changed projects."""
        if not rows:
            return
        # One statement over one array per column, not a statement per project; of two
        # changes of a project in one batch the last is written, as statements in order would.
        latest = {row[0]: row for row in rows}
        inputs = [
            (
                key,
                portfolio,
                revision,
                withdrawn,
                i.mandatory,
                i.ranked,
                json.dumps(i.strategic_fit),
                i.value,
                i.cost,
                i.risk,
                i.deadline,
                *(
                    (
                        i.wsjf.business_value,
                        i.wsjf.time_criticality,
                        i.wsjf.risk_reduction,
                        i.wsjf.job_size,
                    )
                    if i.wsjf
                    else (None, None, None, None)
                ),
                i.effort,
            )
            for key, portfolio, revision, withdrawn, _, i in latest.values()
        ]
        arrays, values = unnest_arguments(_SAVED_INPUT_COLUMNS, inputs)
        await self._conn.execute(_SAVE_INPUTS.format(arrays=arrays), *values)
        await upsert_rows(
            self._conn,
            "project_states",
            (("project_key", "text"), ("state", "jsonb")),
            [(key, state) for key, _, _, _, state, _ in rows],
            key=("project_key",),
        )

    async def inputs(self, keys: Iterable[str]) -> list[ScoringInputs]:
        """The scoring inputs of the projects keyed in ``keys``."""
        rows = await self._conn.fetch(
            f"SELECT {_INPUT_COLUMNS} FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return [_inputs(r) for r in rows]

    async def rows(self, portfolio: str, *, inputs: bool) -> PortfolioRows:
        """The portfolio's projects with their scores and published ranking, and with their
        scoring inputs if ``inputs``."""
        r = await self._conn.fetchrow(_ROWS.format(inputs=_ROW_INPUTS if inputs else ""), portfolio)
        assert r is not None
        keys: list[str] = r["keys"] or []
        columns: dict[str, Any] = {
            "revision": np.array(r["revision"] or [], dtype=np.int64),
            "mandatory": np.array(r["mandatory"] or [], dtype=np.bool_),
            "ranked": np.array(r["ranked"] or [], dtype=np.bool_),
            "score": _floats(r["score"]),
            "published_score": _floats(r["published_score"]),
            "published_rank": np.array(
                [0 if v is None else v for v in r["published_rank"] or []], dtype=np.int64
            ),
        }
        if inputs:
            columns |= {
                "strategic_fit": json.loads(r["strategic_fit"] or "[]"),
                **{c: _floats(r[c]) for c in ("value", "cost", "risk", "deadline", "effort")},
                "wsjf": np.stack([_floats(r[f"wsjf{k}"]) for k in range(1, 5)], axis=1)
                if keys
                else np.zeros((0, 4)),
            }
        overrides = dict(zip(r["overridden"] or [], r["published_override"] or [], strict=True))
        if any(a >= b for a, b in pairwise(keys)):
            # Rows in key order (Python's: by code point), which ranking breaks ties by. Rows
            # mostly come in the order they were loaded, nearly sorted already.
            order = sorted(range(len(keys)), key=keys.__getitem__)
            keys = [keys[i] for i in order]
            columns = {
                k: [v[i] for i in order] if isinstance(v, list) else v[order]
                for k, v in columns.items()
            }
        return PortfolioRows(
            keys=keys,
            revision=columns["revision"],
            mandatory=columns["mandatory"],
            ranked=columns["ranked"],
            score=columns["score"],
            published_score=columns["published_score"],
            published_rank=columns["published_rank"],
            published_override=overrides,
            inputs=InputColumns(
                keys=keys,
                mandatory=columns["mandatory"],
                ranked=columns["ranked"],
                strategic_fit=columns["strategic_fit"],
                value=columns["value"],
                cost=columns["cost"],
                risk=columns["risk"],
                deadline=columns["deadline"],
                wsjf=columns["wsjf"],
                effort=columns["effort"],
            )
            if inputs
            else None,
        )

    async def save_results(
        self,
        scored: tuple[Sequence[str], Sequence[float]],
        published: tuple[
            Sequence[str], Sequence[int | None], Sequence[float], Sequence[str | None]
        ],
    ) -> None:
        """Write new (keys, scores), and record (keys, ranks, scores, override JSON) as the
        ranking now published.

        A batch's few rows (up to ``COPY_ABOVE``) are written by one UPDATE over arrays. More
        go into a staging table with one COPY, and each row of ``projects`` is
        rewritten once, by one UPDATE per kind of change (new score and published; new score
        only; published only). Each UPDATE sets its columns outright: an UPDATE that chose
        between new and old values would carry every old value through its join (a rescore of
        100,000 projects took about 30 % longer so, when the rows held explanations).

        Explanations are not stored: the scoring rules make them again from the inputs
        whenever one is published (docs/scoring.md). Rewriting them took 60 % of a 100,000
        project rescore's UPDATE (docs/performance.md)."""
        keys, scores = scored
        shown_keys, ranks, shown_scores, overrides = published
        if not keys and not shown_keys:
            return
        shown = {
            key: (rank, score, override)
            for key, rank, score, override in zip(
                shown_keys, ranks, shown_scores, overrides, strict=True
            )
        }
        unpublished = (None, None, None)
        records: list[tuple[Any, ...]] = [
            (key, _BOTH if key in shown else _SCORED, score, *shown.get(key, unpublished))
            for key, score in zip(keys, scores, strict=True)
        ]
        rescored = set(keys)
        records += [
            (key, _PUBLISHED, None, *values) for key, values in shown.items() if key not in rescored
        ]
        if len(records) <= COPY_ABOVE:
            # A batch's few rows: one statement, where staging them takes four or five.
            arrays, values = unnest_arguments(_STAGE_COLUMNS, records)
            await self._conn.execute(_APPLY_FEW.format(arrays=arrays), *values)
            return
        await self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS scores_stage (project_key text, kind int,"
            " score double precision, rank int, published_score double precision,"
            " published_override text) ON COMMIT DELETE ROWS"
        )
        kinds = {record[1] for record in records}
        await self._conn.copy_records_to_table("scores_stage", records=records)
        for kind in sorted(kinds):
            await self._conn.execute(_APPLY[kind])
        # Emptied for a second call in the same transaction; the commit empties it anyway (ON
        # COMMIT DELETE ROWS). A few rows are deleted: TRUNCATE gives the table a new file each
        # time, 0.8 ms a batch in pg_stat_statements, more than the rows' own UPDATEs under a
        # steady feed. Many are truncated: deleted rows stay in the table until the commit, and
        # each later UPDATE of the transaction would scan them again.
        await self._conn.execute(
            "TRUNCATE scores_stage"
            if len(records) > _STAGE_DELETE_MAX
            else "DELETE FROM scores_stage"
        )

    async def portfolio(self, portfolio: str) -> PortfolioState:
        row = await self._conn.fetchrow(_STATE, portfolio)
        return _state(row)

    async def ranking_state(self, portfolio: str) -> tuple[PortfolioState, dict[str, Override]]:
        """The portfolio's state and its projects' overrides, in one round trip."""
        row = await self._conn.fetchrow(_STATE_AND_OVERRIDES, portfolio)
        assert row is not None
        overrides = {
            key: Override(
                kind=kind, justification=justification, author=author, rank=rank, delta=delta
            )
            for key, kind, rank, delta, justification, author in zip(
                *(row[c] or [] for c in _OVERRIDE_COLUMNS), strict=True
            )
        }
        return _state(row if row["present"] else None), overrides

    async def save_portfolio(self, portfolio: str, state: PortfolioState) -> None:
        await self._conn.execute(
            "INSERT INTO portfolios (portfolio, ranking_version, model_version, as_of_month,"
            " ranks_due_at, rows_token, ranks_settle_by) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (portfolio) DO UPDATE SET"
            " ranking_version = excluded.ranking_version,"
            " model_version = excluded.model_version, as_of_month = excluded.as_of_month,"
            " ranks_due_at = excluded.ranks_due_at, rows_token = excluded.rows_token,"
            " ranks_settle_by = excluded.ranks_settle_by",
            portfolio,
            state.ranking_version,
            state.model_version,
            state.as_of_month,
            state.ranks_due_at,
            state.rows_token,
            state.ranks_settle_by,
        )

    async def ranks_due(self, at: datetime, limit: int) -> list[str]:
        """Portfolios whose pending rank moves are due by ``at``, the longest-waiting first."""
        rows = await self._conn.fetch(
            "SELECT portfolio FROM portfolios WHERE ranks_due_at <= $1"
            " ORDER BY ranks_due_at LIMIT $2",
            at,
            limit,
        )
        return [r["portfolio"] for r in rows]

    async def add_model(
        self,
        portfolio: str,
        version: int,
        envelope: ModelEnvelope,
        *,
        author: str,
        comment: str,
        command_id: str,
        at: datetime,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO models (portfolio, version, name, spec, author, comment, command_id,"
            " set_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)",
            portfolio,
            version,
            envelope.name,
            envelope.model.model_dump_json(),
            author,
            comment,
            command_id,
            at,
        )

    async def set_override(
        self, portfolio: str, key: str, override: Override | None, at: datetime
    ) -> None:
        if override is None:
            await self._conn.execute("DELETE FROM overrides WHERE project_key = $1", key)
            return
        await self._conn.execute(
            "INSERT INTO overrides (project_key, portfolio, kind, rank, delta, justification,"
            " author, set_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (project_key)"
            " DO UPDATE SET kind = excluded.kind, rank = excluded.rank, delta = excluded.delta,"
            " justification = excluded.justification, author = excluded.author,"
            " set_at = excluded.set_at",
            key,
            portfolio,
            override.kind,
            override.rank,
            override.delta,
            override.justification,
            override.author,
            at,
        )

    async def exists(self, key: str) -> bool:
        return bool(await self._conn.fetchval("SELECT 1 FROM projects WHERE project_key = $1", key))

    async def audit(self, entry: ScoringAudit) -> None:
        await self._conn.execute(
            "INSERT INTO audit (portfolio, command_id, action, author, outcome, detail, comment,"
            " at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
            entry.portfolio,
            entry.command_id,
            entry.action,
            entry.author,
            entry.outcome,
            json.dumps(entry.detail),
            entry.comment,
            entry.at,
        )


class ScoringUnitOfWork(PostgresUnitOfWork):
    projects: ScoringRepository

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.projects = ScoringRepository(conn)
