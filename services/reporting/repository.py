"""Reporting's SQL: applying events to the read model, and the queries behind the API."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.reporting.domain import DeadLetterRow
from shared import inbox
from shared.admission import newest
from shared.contracts.capacity import PortfolioPlanned, ScenarioResult
from shared.contracts.events import (
    PortfolioProject,
    ProjectChanged,
    ProjectDuplicates,
    ProjectPlanned,
    ProjectScored,
    RankChange,
)
from shared.contracts.scoring import ScoringAudit
from shared.db import unnest_arguments
from shared.uow import PostgresUnitOfWork

# (column, type) of what each kind of event writes to ``projects``, key and portfolio first.
_PROJECT_FIELDS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("source", "text"),
    ("external_id", "text"),
    ("name", "text"),
    ("stage", "text"),
    ("program", "text"),
    ("sponsor", "text"),
    ("value", "float8"),
    ("cost", "float8"),
    ("currency", "text"),
    ("mandatory", "bool"),
    ("risk", "int"),
    ("withdrawn", "bool"),
    ("revision", "bigint"),
    ("submission_id", "text"),
)
_DUPLICATE_FIELDS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("possible_duplicates", "jsonb"),
    ("duplicates_revision", "bigint"),
)
_SCORE_FIELDS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("score", "float8"),
    ("rank", "int"),
    ("explanation", "jsonb"),
    ("ranking_version", "bigint"),
    ("model", "text"),
    ("model_version", "int"),
    ("score_cause", "text"),
    ("override", "jsonb"),
)
_PLAN_FIELDS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("plan_status", "text"),
    ("start_month", "text"),
    ("end_month", "text"),
    ("deferral", "jsonb"),
    ("plan_version", "bigint"),
)


# A project change's possible duplicates, kept by its upsert: those found for the project's
# revision (only a revision that opens it is searched), found for this one already, or for a
# later one that this change has not reached (read ahead of it).
_KEEP_DUPLICATES = {
    "possible_duplicates": "CASE WHEN projects.duplicates_revision >= excluded.revision"
    " THEN projects.possible_duplicates ELSE '[]'::jsonb END"
}

# The warehouse marks (``warehouse_pending``) of the rows of ``{source}``, in ``{order}``: each
# project ``{key}`` due at ``{ready}`` when its read-model row ``{row}`` has its own data,
# score and plan (or is withdrawn), else at ``{waiting}``. A mark the feed has not claimed is
# rewritten only to be due earlier; a claimed one gets a new number and keeps its earlier due
# time (``ReadModelWriter.mark_for_warehouse``).
_MARKS = (
    "INSERT INTO warehouse_pending (project_key, due_at)"
    " SELECT {key}, CASE WHEN {row}.withdrawn OR ({row}.revision IS NOT NULL"
    " AND {row}.score IS NOT NULL AND {row}.plan_status IS NOT NULL) THEN {ready}"
    " ELSE {waiting} END FROM {source} ORDER BY {order}"
    " ON CONFLICT (project_key) DO UPDATE SET mark = excluded.mark, claimed = false,"
    " due_at = least(warehouse_pending.due_at, excluded.due_at)"
    " WHERE warehouse_pending.claimed OR excluded.due_at < warehouse_pending.due_at"
)


def _upserted(
    fields: Sequence[tuple[str, str]],
    version: str,
    source: str,
    computed: Mapping[str, str] | None = None,
) -> str:
    """The upsert of ``source``'s rows into ``projects`` (``ReadModelWriter._upsert``)."""
    columns = [name for name, _ in fields]
    expressions = {c: f"excluded.{c}" for c in columns[2:]} | dict(computed or {})
    updates = [f"{c} = {e}" for c, e in expressions.items()]
    guard = f"projects.{version} IS NULL OR projects.{version} < excluded.{version}"
    return (
        f"INSERT INTO projects ({', '.join(columns)}) {source}"
        f" ON CONFLICT (project_key) DO UPDATE SET {', '.join(updates)}, updated_at = now()"
        f" WHERE {guard}"
    )


def _project_row(e: ProjectChanged) -> tuple[Any, ...]:
    """A project change's values, in the order of ``_PROJECT_FIELDS``."""
    return (
        e.project_key,
        e.portfolio,
        e.project.source,
        e.project.external_id,
        e.project.name,
        e.project.stage.value,
        e.project.program,
        e.project.sponsor,
        e.project.value,
        e.project.cost,
        e.project.currency,
        e.project.mandatory,
        e.project.risk,
        e.withdrawn,
        e.revision,
        e.submission_id,
    )


# A portfolio's change count (migration 0004): the validator of its pages and its dashboard's
# change marker.
_CHANGES = "SELECT coalesce(sum(changes), 0) FROM project_changes WHERE portfolio = $1"


class ReadModelWriter:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def apply_projects(self, events: Sequence[ProjectChanged]) -> None:
        latest = newest(events, lambda e: e.project_key, lambda e: e.revision, {})
        await self._upsert(
            _PROJECT_FIELDS,
            "revision",
            [_project_row(e) for e in latest],
            computed=_KEEP_DUPLICATES,
        )

    async def apply_duplicates(self, entries: Sequence[tuple[str, ProjectDuplicates]]) -> None:
        """Possible duplicates, each ``(portfolio, entry)``, over those of an older revision
        of the project only. They are kept while the project is at that revision or before it
        (or not here yet: they may come before its change, on another consumer), and dropped,
        their revision still recorded, for a project already past it: the row ends the same
        whichever of the two consumers writes it first, as an in-order replay leaves it."""
        latest = newest(entries, lambda e: e[1].project_key, lambda e: e[1].revision, {})
        await self._upsert(
            _DUPLICATE_FIELDS,
            "duplicates_revision",
            [
                (
                    e.project_key,
                    portfolio,
                    json.dumps([d.model_dump() for d in e.possible_duplicates]),
                    e.revision,
                )
                for portfolio, e in latest
            ],
            computed={
                "possible_duplicates": "CASE WHEN projects.revision IS NULL"
                " OR projects.revision <= excluded.duplicates_revision"
                " THEN excluded.possible_duplicates ELSE '[]'::jsonb END"
            },
        )

    async def apply_scores(self, events: Sequence[ProjectScored]) -> None:
        latest = newest(events, lambda e: e.project_key, lambda e: e.ranking_version, {})
        await self._upsert(
            _SCORE_FIELDS,
            "ranking_version",
            [
                (
                    e.project_key,
                    e.portfolio,
                    e.score,
                    e.rank,
                    json.dumps([c.model_dump() for c in e.explanation]),
                    e.ranking_version,
                    e.model,
                    e.model_version,
                    e.cause,
                    e.override.model_dump_json() if e.override else None,
                )
                for e in latest
            ],
        )

    async def _upsert(
        self,
        fields: Sequence[tuple[str, str]],
        version: str,
        rows: Sequence[tuple[Any, ...]],
        *,
        computed: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or update ``rows`` (one per project, values in the order of ``fields``:
        (column, type), the key and portfolio first) in one statement: a row replaces the
        stored columns only when its ``version`` column is newer, each with the row's value or
        the expression ``computed`` gives for it. One statement for the batch
        instead of ``executemany``'s one per event: about 15 % less statement time at 274
        submissions/s (the rest is per row: the history trigger's version and the indexes)."""
        if not rows:
            return
        # Rows locked in key order, as the rank moves and warehouse marks lock theirs: two
        # batches writing the same projects (two consumers, two replicas) wait, not deadlock.
        rows = sorted(rows, key=lambda row: row[0])
        arrays, values = unnest_arguments(fields, rows)
        await self._conn.execute(
            _upserted(fields, version, f"SELECT * FROM unnest({arrays})", computed), *values
        )

    async def apply_projects_alone(
        self, events: Sequence[tuple[str, ProjectChanged]], due: tuple[datetime, datetime]
    ) -> int:
        """A batch of project changes alone, each ``(event id, change)``, in one statement that
        is its own transaction: the inbox's claim of the ids, the changes of the claimed ids
        (as ``apply_projects``) and the warehouse marks of the rows they wrote (as
        ``mark_for_warehouse``, each project with ``due``), without a BEGIN and a COMMIT.
        Returns how many of the ids were claimed (the rest had been applied before). Every
        record holds a change: one with none is claimed only through the transaction
        (``ReportingHandler.handle`` sends its batch there).

        Run on a connection outside a transaction: the project lane's usual batch is one round
        trip to Postgres instead of five (begin, claim, write, mark, commit), on the path from
        a submission to the API. The marks are the written rows' only (a change older than the
        stored one writes nothing, so it needs no record), locked in the keys' sorted order as
        the other statements lock theirs: each is the mark of a row this statement holds."""
        ids = list(dict.fromkeys(event_id for event_id, _ in events))
        latest = newest(events, lambda e: e[1].project_key, lambda e: e[1].revision, {})
        rows = sorted(
            ((*_project_row(change), event_id) for event_id, change in latest),
            key=lambda row: row[0],
        )
        fields = (*_PROJECT_FIELDS, ("event_id", "text"))
        arrays, values = unnest_arguments(fields, rows)
        n = len(fields)
        claims, ready, waiting = (
            f"${n + 1}::text[]",
            f"${n + 2}::timestamptz",
            f"${n + 3}::timestamptz",
        )
        columns = ", ".join(name for name, _ in _PROJECT_FIELDS)
        written = _upserted(
            _PROJECT_FIELDS,
            "revision",
            f"SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY AS u({columns}, event_id, n)"
            " WHERE u.event_id IN (SELECT event_id FROM claimed) ORDER BY u.n",
            _KEEP_DUPLICATES,
        )
        # Python's order of the keys, as ``mark_for_warehouse`` and the clearing lock them.
        marks = {"key": "written.project_key", "row": "written", "ready": ready}
        marks |= {"waiting": waiting, "source": "written", "order": 'project_key COLLATE "C"'}
        claimed: int = await self._conn.fetchval(
            f"WITH claimed AS ({inbox.CLAIM.format(ids=claims)}),"
            f" written AS ({written} RETURNING projects.*),"
            f" marked AS ({_MARKS.format(**marks)})"
            " SELECT count(*) FROM claimed",
            *values,
            ids,
            *due,
        )
        return claimed

    async def move_ranks(self, moves: Sequence[tuple[int, RankChange]]) -> None:
        """Ranks that moved, each ``(ranking_version, move)``, applied over older versions
        only, and recorded in the rank history (a move is not a version of the whole row;
        migration 0007); a project whose score has not arrived yet is left to its
        ``ProjectScored``. The statement runs with ``pmo.moving_ranks`` on, which keeps the
        history trigger from making versions of the rows it moves (migration 0010); in a
        savepoint, so that a failure in between cannot leave the setting on for the rest of
        the transaction's writes."""
        if not moves:
            return
        # In key order, as the upserts: the join's plans here (the moves' array outermost)
        # lock rows in the array's order, which Postgres does not promise for every plan.
        moves = sorted(moves, key=lambda move: move[1].project_key)
        async with self._conn.transaction():
            await self._conn.execute("SELECT set_config('pmo.moving_ranks', 'on', true)")
            await self._conn.execute(
                "WITH moved AS (UPDATE projects p SET rank = m.rank, ranking_version = m.version,"
                " updated_at = now()"
                " FROM unnest($1::text[], $2::int[], $3::bigint[]) AS m(project_key, rank, version)"
                " WHERE p.project_key = m.project_key AND p.ranking_version < m.version"
                " RETURNING p.project_key, p.portfolio, p.ranking_version, p.rank)"
                " INSERT INTO rank_history (project_key, portfolio, ranking_version, rank)"
                " SELECT project_key, portfolio, ranking_version, rank FROM moved",
                [m.project_key for _, m in moves],
                [m.rank for _, m in moves],
                [v for v, _ in moves],
            )
            await self._conn.execute("SELECT set_config('pmo.moving_ranks', 'off', true)")

    async def apply_plans(self, events: Sequence[ProjectPlanned]) -> None:
        latest = newest(events, lambda e: e.project_key, lambda e: e.plan_version, {})
        await self._upsert(
            _PLAN_FIELDS,
            "plan_version",
            [
                (
                    e.project_key,
                    e.portfolio,
                    e.status,
                    e.start_month,
                    e.end_month,
                    e.deferral.model_dump_json() if e.deferral else None,
                    e.plan_version,
                )
                for e in latest
            ],
        )

    async def add_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        await self._conn.executemany(
            "INSERT INTO dead_letters (dead_letter_id, consumer, source_topic, source_partition,"
            " source_offset, record_key, reasons, original_size) VALUES ($1, $2, $3, $4, $5, $6,"
            " $7::jsonb, $8) ON CONFLICT (dead_letter_id) DO NOTHING",
            [
                (
                    r.dead_letter_id,
                    r.consumer,
                    r.source_topic,
                    r.source_partition,
                    r.source_offset,
                    r.record_key,
                    json.dumps(r.reasons),
                    r.original_size,
                )
                for r in rows
            ],
        )

    async def add_audit(self, entries: Sequence[ScoringAudit]) -> None:
        await self._conn.executemany(
            "INSERT INTO scoring_audit (command_id, portfolio, action, author, outcome, detail,"
            " comment, at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"
            " ON CONFLICT (command_id) DO NOTHING",
            [
                (
                    e.command_id,
                    e.portfolio,
                    e.action,
                    e.author,
                    e.outcome,
                    json.dumps(e.detail),
                    e.comment,
                    e.at,
                )
                for e in entries
            ],
        )

    async def add_summaries(self, summaries: Sequence[PortfolioPlanned]) -> None:
        await self._conn.executemany(
            "INSERT INTO plan_summaries (portfolio, plan_version, planned_at, horizon_start,"
            " horizon_months, utilisation, conflicts, skill_gaps) VALUES ($1, $2, $3, $4, $5,"
            " $6::jsonb, $7::jsonb, $8::jsonb) ON CONFLICT (portfolio, plan_version) DO NOTHING",
            [
                (
                    e.portfolio,
                    e.plan_version,
                    e.planned_at,
                    e.horizon_start,
                    e.horizon_months,
                    json.dumps([c.model_dump() for c in e.utilisation]),
                    json.dumps([c.model_dump() for c in e.conflicts]),
                    json.dumps([g.model_dump() for g in e.skill_gaps]),
                )
                for e in summaries
            ],
        )

    async def add_scenario_results(self, results: Sequence[ScenarioResult]) -> None:
        await self._conn.executemany(
            "INSERT INTO scenarios (request_id, portfolio, kind, author, computed_at, result)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (request_id) DO UPDATE SET"
            " computed_at = excluded.computed_at, result = excluded.result",
            [
                (r.request_id, r.portfolio, r.kind, r.author, r.computed_at, r.model_dump_json())
                for r in results
            ],
        )

    async def add_scenario_request(
        self, request_id: str, portfolio: str, kind: str, author: str
    ) -> None:
        await self._conn.execute(
            "INSERT INTO scenarios (request_id, portfolio, kind, author) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (request_id) DO NOTHING",
            request_id,
            portfolio,
            kind,
            author,
        )

    async def mark_for_warehouse(self, due: Mapping[str, tuple[datetime, datetime]]) -> None:
        """Projects whose warehouse record is to be published, each by its time (once, however
        often marked before the publisher comes by): the first of each pair for a project with
        its own data, score and plan (or withdrawn), the second for one still waiting for any
        of them, as this transaction sees the row after its own writes. The batch that brings
        the last of them marks the project with the first, earlier time.

        A mark the publisher has not claimed is rewritten only to be due earlier: the record
        will be read after the claim, with this batch's change in it. A claimed mark gets a new
        number, so the publisher's clearing keeps it, and keeps its earlier due time: the
        record being built may miss this batch's change, and a change of the project's own
        data must not wait out the rank delay because a move came after it (migration 0009)."""
        if due:
            keys = sorted(due)  # rows locked in key order: no deadlock between batches
            await self._conn.execute(
                # in the keys' order as sorted here, which the clearing locks in too (not the
                # database's collation); a project without a row yet waits
                _MARKS.format(
                    key="m.k",
                    row="p",
                    ready="m.ready",
                    waiting="m.waiting",
                    source="unnest($1::text[], $2::timestamptz[], $3::timestamptz[])"
                    " WITH ORDINALITY AS m(k, ready, waiting, n)"
                    " LEFT JOIN projects p ON p.project_key = m.k",
                    order="m.n",
                ),
                keys,
                [due[k][0] for k in keys],
                [due[k][1] for k in keys],
            )

    async def claim_warehouse_marks(self, at: datetime, limit: int) -> list[tuple[str, int]]:
        """Claim up to ``limit`` marks due by ``at``, the earliest due first, and return them as
        (project, mark number). Rows a batch holds are skipped (the next pass takes them), so
        the claim never waits. Commit it before reading the projects: a batch marking one of
        them afterwards sees the claim and renumbers the mark."""
        rows = await self._conn.fetch(
            "UPDATE warehouse_pending w SET claimed = true FROM ("
            " SELECT project_key FROM warehouse_pending WHERE due_at <= $1"
            " ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS due"
            " WHERE w.project_key = due.project_key RETURNING w.project_key, w.mark, w.due_at",
            at,
            limit,
        )
        ordered = sorted(rows, key=lambda r: (r["due_at"], r["project_key"]))
        return [(r["project_key"], r["mark"]) for r in ordered]

    async def clear_warehouse_marks(self, marks: Sequence[tuple[str, int]]) -> set[str]:
        """Clear these marks where the project has not been marked again since; returns the
        projects cleared (by this transaction: another replica's clearing waits for it)."""
        # Sorted, as batches mark them; the join does not promise to lock in this order, and a
        # deadlock with a batch is retried as a transient error.
        ordered = sorted(marks)
        rows = await self._conn.fetch(
            "DELETE FROM warehouse_pending w USING unnest($1::text[], $2::bigint[]) AS m(k, n)"
            " WHERE w.project_key = m.k AND w.mark = m.n RETURNING w.project_key",
            [k for k, _ in ordered],
            [n for _, n in ordered],
        )
        return {r["project_key"] for r in rows}

    async def denormalised(self, keys: Sequence[str]) -> list[PortfolioProject]:
        """The current rows of ``keys`` as warehouse records."""
        rows = await self._conn.fetch(
            "SELECT project_key, portfolio, source, external_id, name, stage, program, sponsor,"
            " mandatory, value, cost, currency, risk, withdrawn, revision, score, rank, model,"
            " model_version, explanation, plan_status, start_month, end_month, deferral,"
            " ranking_version, plan_version FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        out = []
        for r in rows:
            row = dict(r)
            for name in ("explanation", "deferral"):
                row[name] = json.loads(row[name]) if row[name] is not None else None
            out.append(PortfolioProject.model_validate(row))
        return out


class ReportingUnitOfWork(PostgresUnitOfWork):
    read_model: ReadModelWriter

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.read_model = ReadModelWriter(conn)

    async def apply_projects_alone(
        self, events: Sequence[tuple[str, ProjectChanged]], due: tuple[datetime, datetime]
    ) -> int:
        """``ReadModelWriter.apply_projects_alone`` outside ``async with``: on a pooled
        connection of its own, the statement its own transaction."""
        async with self._pool.acquire() as conn:
            return await ReadModelWriter(conn).apply_projects_alone(events, due)


PROJECT_COLUMNS = (
    "project_key, source, external_id, name, stage, program, sponsor, value, cost, currency,"
    " mandatory, risk, withdrawn, revision, score, rank, explanation, model, model_version,"
    " score_cause, override, possible_duplicates, plan_status, start_month, end_month, deferral,"
    " updated_at"
)
_JSON_COLUMNS = ("explanation", "deferral", "override", "possible_duplicates")
# What a project's movement between two instants compares (ReadModelQueries.movement).
MOVEMENT = (
    "rank",
    "score",
    "stage",
    "plan_status",
    "start_month",
    "end_month",
    "value",
    "cost",
    "withdrawn",
)


def _decoded(row: Any) -> dict[str, Any]:
    item = dict(row)
    item.pop("total", None)
    for name in _JSON_COLUMNS:
        if name in item and item[name] is not None:
            item[name] = json.loads(item[name])
    return item


@dataclass(frozen=True, slots=True)
class ProjectFilter:
    stage: str | None = None
    program: str | None = None
    plan_status: str | None = None
    mandatory: bool | None = None
    ranked_only: bool = False
    include_withdrawn: bool = False


class ReadModelQueries:
    """The API's reads; each is one statement on the pool. ``as_of`` reads the history: the
    rows valid at that instant."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        return self._pool

    @staticmethod
    def _project_source(
        scope: str | list[str],
        as_of: datetime | None,
        f: ProjectFilter,
        *,
        by: Literal["portfolio", "project_key", "project_keys"] = "portfolio",
    ) -> tuple[str, list[Any]]:
        """The rows of the portfolio ``scope``, or, ``by`` project key, of the one project whose
        key is ``scope`` (a key begins with its portfolio's name, so the key alone selects it),
        or of the projects whose keys are the list ``scope``.

        A single project is found by its key alone: the pool's sessions keep a generic plan
        of a statement after its first five runs, and one planned while the table held a few
        rows, given the portfolio as well, read the portfolio's index and filtered its rows
        by key, a scan of the whole portfolio for every lookup, and as of an instant of the
        portfolio's whole history up to it (docs/performance.md)."""
        args: list[Any] = [scope]
        table = "projects"
        match = "project_key = ANY($1::text[])" if by == "project_keys" else f"{by} = $1"
        where = [match, "revision IS NOT NULL"]
        if as_of is not None:
            # The rows as they were then, ranks moved since their version included, while the
            # history answers that instant (PM001 otherwise; migration 0018).
            args.append(as_of)
            table = f"projects_as_of(${len(args)})"
            where.append(f"history_answers(${len(args)})")
        if not f.include_withdrawn:
            where.append("NOT coalesce(withdrawn, false)")
        for column, value in (
            ("stage", f.stage),
            ("program", f.program),
            ("plan_status", f.plan_status),
            ("mandatory", f.mandatory),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if f.ranked_only:
            where.append("rank IS NOT NULL")
        return f"FROM {table} WHERE " + " AND ".join(where), args

    async def projects(
        self,
        portfolio: str,
        *,
        limit: int,
        offset: int,
        as_of: datetime | None = None,
        filters: ProjectFilter = ProjectFilter(),
    ) -> tuple[int, list[dict[str, Any]]]:
        source, args = self._project_source(portfolio, as_of, filters)
        # The total is counted on its own: count(*) OVER () over the page query kept every
        # matching row, JSON columns and all, to count them (29 ms and a temporary file for
        # 10,000 projects, against 6 ms). The LEFT JOIN keeps the total when the page is empty.
        rows = await self._pool.fetch(
            f"SELECT t.total, p.* FROM (SELECT count(*) AS total {source}) t LEFT JOIN LATERAL"
            f" (SELECT {PROJECT_COLUMNS} {source} ORDER BY rank NULLS LAST, project_key"
            f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}) p ON true",
            *args,
            limit,
            offset,
        )
        return rows[0]["total"], [_decoded(r) for r in rows if r["project_key"] is not None]

    async def movement(
        self,
        portfolio: str,
        *,
        since: datetime,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[int, datetime, list[dict[str, Any]]]:
        """The projects of ``portfolio`` that differ between ``since`` and ``until`` (now when
        None) in any of ``MOVEMENT``, withdrawn ones included: each with its values at both
        instants, which of them changed, and how (``added``, ``withdrawn``, ``reinstated``,
        ``changed``; ``removed`` for one the later instant does not have, which the history,
        keeping every project's last version, does not leave). Ranks as each instant reads
        them (moves included), in the later instant's rank order; those it does not rank
        after, by their earlier rank. One statement, which refuses an instant the history no
        longer answers (PM001); with the count and the later instant (the statement's now)."""
        columns = "project_key, source, external_id, name, " + ", ".join(MOVEMENT)
        rows_at = "FROM {} WHERE portfolio = $1 AND revision IS NOT NULL"
        earlier = rows_at.format("projects_as_of($2)") + " AND history_answers($2)"
        later = rows_at.format("projects")
        if until is not None:
            later = rows_at.format("projects_as_of($3)") + " AND history_answers($3)"
        paired = ", ".join(f"a.{c} AS {c}_before, b.{c} AS {c}_after" for c in MOVEMENT)
        changed = ", ".join(
            f"CASE WHEN a.{c} IS DISTINCT FROM b.{c} THEN '{c}' END" for c in MOVEMENT
        )
        args: list[Any] = [portfolio, since] + ([] if until is None else [until])
        rows = await self._pool.fetch(
            f"WITH a AS (SELECT {columns} {earlier}),"
            f" b AS (SELECT {columns} {later}),"
            " d AS (SELECT coalesce(b.project_key, a.project_key) AS project_key,"
            " coalesce(b.source, a.source) AS source,"
            " coalesce(b.external_id, a.external_id) AS external_id,"
            " coalesce(b.name, a.name) AS name,"
            " CASE WHEN a.project_key IS NULL THEN 'added'"
            " WHEN b.project_key IS NULL THEN 'removed'"
            " WHEN coalesce(b.withdrawn, false) > coalesce(a.withdrawn, false) THEN 'withdrawn'"
            " WHEN coalesce(a.withdrawn, false) > coalesce(b.withdrawn, false) THEN 'reinstated'"
            " ELSE 'changed' END AS change,"
            f" array_remove(ARRAY[{changed}], NULL) AS changed,"
            f" a.rank - b.rank AS rank_gained, {paired}"
            " FROM a FULL JOIN b ON a.project_key = b.project_key"
            " WHERE a.project_key IS NULL OR b.project_key IS NULL"
            f" OR ({', '.join(f'a.{c}' for c in MOVEMENT)})"
            f" IS DISTINCT FROM ({', '.join(f'b.{c}' for c in MOVEMENT)}))"
            " SELECT t.total, t.until, p.* FROM (SELECT count(*) AS total,"
            f" {'now()' if until is None else '$3'} AS until FROM d) t LEFT JOIN LATERAL"
            " (SELECT * FROM d ORDER BY rank_after NULLS LAST, rank_before NULLS LAST, project_key"
            f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}) p ON true",
            *args,
            limit,
            offset,
        )
        items = [dict(r) for r in rows if r["project_key"] is not None]
        for item in items:
            del item["total"], item["until"]
        return rows[0]["total"], rows[0]["until"], items

    async def projects_version(self, portfolio: str) -> str:
        """A validator of ``portfolio``'s project rows: it changes when a transaction that
        changed any of them commits, whichever process wrote it (migration 0004). Read it
        before the rows it validates: a change committed in between then only makes the
        validator look older than the rows, never newer."""
        version: str = await self._pool.fetchval(
            f"SELECT ({_CHANGES})::text",
            portfolio,
        )
        return version

    async def project(self, key: str, as_of: datetime | None = None) -> dict[str, Any] | None:
        source, args = self._project_source(
            key, as_of, ProjectFilter(include_withdrawn=True), by="project_key"
        )
        row = await self._pool.fetchrow(f"SELECT {PROJECT_COLUMNS} {source}", *args)
        return _decoded(row) if row else None

    @staticmethod
    async def projects_now(
        conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any], keys: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """These projects as ``project`` reads each now (those there are), by key, in one
        statement on ``conn``."""
        source, args = ReadModelQueries._project_source(
            list(keys), None, ProjectFilter(include_withdrawn=True), by="project_keys"
        )
        rows = await conn.fetch(f"SELECT {PROJECT_COLUMNS} {source}", *args)
        return {r["project_key"]: _decoded(r) for r in rows}

    async def kept_from(self) -> datetime | None:
        """The earliest instant the history answers as it was, since a retention's sweep
        (``HistoryPurge.keep_from``); None when nothing has been swept."""
        kept: datetime | None = await self._pool.fetchval("SELECT kept_from FROM history_kept")
        return kept

    async def portfolios(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT portfolio, count(*) FILTER (WHERE NOT coalesce(withdrawn, false)) AS projects,"
            " max(updated_at) AS updated_at FROM projects WHERE revision IS NOT NULL"
            " GROUP BY portfolio ORDER BY portfolio"
        )
        return [dict(r) for r in rows]

    async def summary(self, portfolio: str, as_of: datetime | None = None) -> dict[str, Any] | None:
        """The plan summary in force (the latest, or the latest recorded by ``as_of``)."""
        row = await self._pool.fetchrow(
            "SELECT plan_version, planned_at, recorded_at, horizon_start, horizon_months,"
            " utilisation, conflicts, skill_gaps FROM plan_summaries WHERE portfolio = $1"
            " AND ($2::timestamptz IS NULL OR recorded_at <= $2)"
            # Of the parameter alone, so checked once before any row, found or not.
            " AND ($2::timestamptz IS NULL OR history_answers($2))"
            " ORDER BY plan_version DESC LIMIT 1",
            portfolio,
            as_of,
        )
        if row is None:
            return None
        item = dict(row)
        for name in ("utilisation", "conflicts", "skill_gaps"):
            item[name] = json.loads(item[name])
        return item

    async def funnel(self, portfolio: str, as_of: datetime | None = None) -> dict[str, Any]:
        source, args = self._project_source(portfolio, as_of, ProjectFilter())
        stages = await self._pool.fetch(
            f"SELECT stage, count(*) AS projects, sum(value) AS value, sum(cost) AS cost {source}"
            " GROUP BY stage ORDER BY stage",
            *args,
        )
        # starts_with, not LIKE: a portfolio id may contain % or _, which LIKE reads as wildcards.
        refused = await self._pool.fetchval(
            "SELECT count(*) FROM dead_letters WHERE consumer = 'intake'"
            " AND starts_with(record_key, $1) AND ($2::timestamptz IS NULL OR received_at <= $2)",
            f"{portfolio}/",
            as_of,
        )
        return {"stages": [dict(r) for r in stages], "rejected_submissions": refused}

    async def funding_rows(
        self, portfolio: str, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The ranked projects of ``portfolio`` in rank order, with what a funding line reads
        (services/reporting/funding.py)."""
        source, args = self._project_source(portfolio, as_of, ProjectFilter(ranked_only=True))
        rows = await self._pool.fetch(
            "SELECT rank, project_key, source, external_id, name, stage, mandatory, score,"
            f" value, cost, currency, plan_status {source} ORDER BY rank, project_key",
            *args,
        )
        return [dict(r) for r in rows]

    async def programs(self, portfolio: str, as_of: datetime | None = None) -> list[dict[str, Any]]:
        source, args = self._project_source(portfolio, as_of, ProjectFilter())
        rows = await self._pool.fetch(
            "SELECT coalesce(program, '(none)') AS program, count(*) AS projects,"
            " sum(value) AS value, sum(cost) AS cost, avg(score) AS average_score,"
            " count(*) FILTER (WHERE plan_status IN ('planned', 'committed')) AS planned,"
            " count(*) FILTER (WHERE plan_status = 'deferred') AS deferred,"
            f" min(start_month) AS first_start, max(end_month) AS last_end {source}"
            " GROUP BY coalesce(program, '(none)') ORDER BY program",
            *args,
        )
        return [dict(r) for r in rows]

    async def scoring_audit(
        self, portfolio: str, *, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        rows = await self._pool.fetch(
            "SELECT count(*) OVER () AS total, command_id, action, author, outcome, detail,"
            " comment, at FROM scoring_audit WHERE portfolio = $1"
            " ORDER BY at DESC, command_id LIMIT $2 OFFSET $3",
            portfolio,
            limit,
            offset,
        )
        total = rows[0]["total"] if rows else 0
        items = []
        for r in rows:
            item = dict(r)
            item.pop("total")
            item["detail"] = json.loads(item["detail"])
            items.append(item)
        return total, items

    async def scenario(self, portfolio: str, request_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            "SELECT request_id, kind, author, requested_at, computed_at, result FROM scenarios"
            " WHERE portfolio = $1 AND request_id = $2",
            portfolio,
            request_id,
        )
        if row is None:
            return None
        item = dict(row)
        item["result"] = json.loads(item["result"]) if item["result"] else None
        return item

    async def change_marker(self, portfolio: str) -> str:
        """Changes whenever anything shown for ``portfolio`` changes (for live dashboards): the
        projects' change count (``projects_version``), which moves with every transaction
        that changes them whatever order they commit in (a newest ``updated_at`` did not:
        a transaction that began earlier and committed later left it unchanged), and the
        newest plan summary."""
        row = await self._pool.fetchrow(
            f"SELECT ({_CHANGES}) AS projects,"
            " (SELECT max(plan_version) FROM plan_summaries WHERE portfolio = $1) AS plan",
            portfolio,
        )
        assert row is not None
        return f"{row['projects']}|{row['plan']}"


READ_MODEL_TABLES = (
    "projects",
    "projects_history",
    "rank_history",
    "plan_summaries",
    "scenarios",
    "dead_letters",
    "scoring_audit",
    "inbox",
    "warehouse_pending",
)


async def truncate_read_model(conn: Any) -> None:
    """Empty every table built from events (and the inbox, so they are applied again)."""
    await conn.execute(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}")


# The index a sweep of the history finds a project's rank moves from before its cutoff through,
# with their ranking versions (``HistoryPurge.kept``). The moves' own index is by ranking
# version, through which a sweep would read every move a project has, the whole window kept,
# each time. The retention builds it when it first sweeps (services/reporting/retention.py),
# not a migration: it adds about half again to what a rank move costs to write and to store
# (docs/reporting.md), which a history kept whole does not need.
RANK_MOVES_BY_TIME = "rank_history_time"
BUILD_LOCK = zlib.crc32(b"pmo.reporting.rank_history_time") - 2**31


@dataclass(frozen=True, slots=True)
class KeptHistory:
    """Of some projects' history recorded by a cutoff, what each keeps: its last version's
    time and its newest ranking's version (``HistoryPurge.kept``)."""

    version_keys: list[str]
    version_times: list[datetime]
    move_keys: list[str]
    move_versions: list[int]


class HistoryPurge:
    """The statements of the history's retention (services/reporting/retention.py): each
    deletes only what no instant from ``cutoff`` on reads.

    The history is read at an instant T as the last of a kind recorded by T: a project's last
    version by T (``projects_as_of``), its rank move of the newest ranking recorded by T, a
    portfolio's plan summary of the highest plan version recorded by T. For every T at or after
    the cutoff, the rows recorded by the cutoff count only through the last of them, so every
    other row recorded by then is deleted, and the last is kept (it is what was in force at
    the cutoff). What each project or portfolio keeps is read once (``kept``,
    ``kept_summary``), through indexes by project (or portfolio) and time that hold what the
    reading needs; the deletes then take at most ``limit`` rows each, from the rows recorded
    by the cutoff alone."""

    def __init__(self, conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def index_valid(self) -> bool | None:
        """Whether the sweep's index on the rank moves (``RANK_MOVES_BY_TIME``) is valid; None
        when there is none."""
        valid: bool | None = await self._conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
            RANK_MOVES_BY_TIME,
        )
        return valid

    async def take_build(self) -> bool:
        """The session's lock on building that index, if no other session has it (tried,
        never waited for: a session waiting for it inside a statement would hold up the
        concurrent build it waits for)."""
        taken: bool = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", BUILD_LOCK)
        return taken

    async def give_build(self) -> None:
        """Give the build's lock back (and any other of the session's: a pooled connection
        holds none; shared/db.py)."""
        await self._conn.execute("SELECT pg_advisory_unlock_all()")

    async def build_index(self, *, invalid: bool) -> None:
        """Build the index concurrently, outside a transaction; one left ``invalid`` by a
        build that failed is dropped first."""
        if invalid:
            await self._conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {RANK_MOVES_BY_TIME}")
        await self._conn.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {RANK_MOVES_BY_TIME}"
            " ON rank_history (project_key, valid_from) INCLUDE (ranking_version)"
        )

    async def keep_from(self, cutoff: datetime) -> datetime:
        """Record that the history is kept from ``cutoff`` on (``history_kept``), before
        anything recorded by it is deleted; the later of it and what was recorded, which the
        API reads (``ReadModelQueries.kept_from``). Its own transaction: committed first."""
        kept: datetime = await self._conn.fetchval(
            "INSERT INTO history_kept (kept_from) VALUES ($1) ON CONFLICT (singleton)"
            " DO UPDATE SET kept_from = greatest(history_kept.kept_from, EXCLUDED.kept_from),"
            " swept_at = now() RETURNING kept_from",
            cutoff,
        )
        return kept

    async def project_keys(self, after: str, limit: int) -> list[str]:
        """The next ``limit`` projects with a history, by key after ``after`` (a sweep's
        batches), found through the versions' index a key at a time."""
        rows = await self._conn.fetch(
            "WITH RECURSIVE k (project_key, n) AS ("
            " (SELECT project_key, 1 FROM projects_history WHERE project_key > $1"
            "  ORDER BY project_key LIMIT 1)"
            " UNION ALL SELECT (SELECT h.project_key FROM projects_history h"
            "  WHERE h.project_key > k.project_key ORDER BY h.project_key LIMIT 1), k.n + 1"
            " FROM k WHERE k.project_key IS NOT NULL AND k.n < $2)"
            " SELECT project_key FROM k WHERE project_key IS NOT NULL",
            after,
            limit,
        )
        return [r["project_key"] for r in rows]

    async def kept(self, keys: Sequence[str], cutoff: datetime) -> KeptHistory:
        """What each of ``keys`` keeps from before ``cutoff`` (projects_history_key; the
        retention's rank_history_time, which holds the ranking version)."""
        versions = await self._conn.fetch(
            "SELECT project_key, max(valid_from) AS kept FROM projects_history"
            " WHERE project_key = ANY($1::text[]) AND valid_from <= $2 GROUP BY project_key",
            keys,
            cutoff,
        )
        moves = await self._conn.fetch(
            "SELECT project_key, max(ranking_version) AS kept FROM rank_history"
            " WHERE project_key = ANY($1::text[]) AND valid_from <= $2 GROUP BY project_key",
            keys,
            cutoff,
        )
        return KeptHistory(
            [r["project_key"] for r in versions],
            [r["kept"] for r in versions],
            [r["project_key"] for r in moves],
            [r["kept"] for r in moves],
        )

    async def projects(self, kept: KeptHistory, cutoff: datetime, limit: int) -> tuple[int, int]:
        """Delete up to ``limit`` versions and up to ``limit`` rank moves from before what
        each project keeps; returns how many of each."""
        versions = await self._conn.execute(
            "DELETE FROM projects_history WHERE ctid = ANY (ARRAY ("
            " SELECT h.ctid FROM unnest($1::text[], $2::timestamptz[]) AS k (project_key, kept)"
            " JOIN projects_history h ON h.project_key = k.project_key AND h.valid_from < k.kept"
            " LIMIT $3))",
            kept.version_keys,
            kept.version_times,
            limit,
        )
        moves = await self._conn.execute(
            "DELETE FROM rank_history WHERE ctid = ANY (ARRAY ("
            " SELECT r.ctid FROM unnest($1::text[], $2::bigint[]) AS k (project_key, kept)"
            " JOIN rank_history r ON r.project_key = k.project_key AND r.valid_from <= $3"
            "  AND r.ranking_version < k.kept"
            " LIMIT $4))",
            kept.move_keys,
            kept.move_versions,
            cutoff,
            limit,
        )
        return _count(versions), _count(moves)

    async def portfolios(self) -> list[str]:
        """The portfolios with plan summaries, found through the summaries' index a portfolio
        at a time (Postgres 15 reads an index's distinct leading values no other way)."""
        rows = await self._conn.fetch(
            "WITH RECURSIVE p (portfolio) AS ("
            " (SELECT portfolio FROM plan_summaries ORDER BY portfolio LIMIT 1)"
            " UNION ALL SELECT (SELECT s.portfolio FROM plan_summaries s"
            "  WHERE s.portfolio > p.portfolio ORDER BY s.portfolio LIMIT 1)"
            " FROM p WHERE p.portfolio IS NOT NULL)"
            " SELECT portfolio FROM p WHERE portfolio IS NOT NULL"
        )
        return [r["portfolio"] for r in rows]

    async def kept_summary(self, portfolio: str, cutoff: datetime) -> int | None:
        """The plan version ``portfolio`` keeps from before ``cutoff`` (none without one)."""
        kept: int | None = await self._conn.fetchval(
            "SELECT max(plan_version) FROM plan_summaries"
            " WHERE portfolio = $1 AND recorded_at <= $2",
            portfolio,
            cutoff,
        )
        return kept

    async def summaries(self, portfolio: str, kept: int, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` of ``portfolio``'s plan summaries from before the one it
        keeps (plan_summaries_recorded); returns how many."""
        status = await self._conn.execute(
            "DELETE FROM plan_summaries WHERE ctid = ANY (ARRAY ("
            " SELECT ctid FROM plan_summaries WHERE portfolio = $1 AND recorded_at <= $2"
            " AND plan_version < $3 LIMIT $4))",
            portfolio,
            cutoff,
            kept,
            limit,
        )
        return _count(status)


def _count(status: str) -> int:
    """The row count of a command's status (``DELETE 12``)."""
    return int(status.rsplit(" ", 1)[-1])
