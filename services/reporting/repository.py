"""Reporting's SQL: applying events to the read model, and the queries behind the API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.reporting.domain import DeadLetterRow
from shared.contracts.events import ProjectChanged, ProjectPlanned, ProjectScored
from shared.contracts.scoring import ScoringAudit
from shared.uow import PostgresUnitOfWork


class ReadModelWriter:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def apply_projects(self, events: Sequence[ProjectChanged]) -> None:
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, source, external_id, name, stage,"
            " program, sponsor, value, cost, currency, mandatory, risk, withdrawn, revision,"
            " submission_id, possible_duplicates) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " $11, $12, $13, $14, $15, $16, $17::jsonb)"
            " ON CONFLICT (project_key) DO UPDATE SET source = excluded.source,"
            " external_id = excluded.external_id, name = excluded.name, stage = excluded.stage,"
            " program = excluded.program, sponsor = excluded.sponsor, value = excluded.value,"
            " cost = excluded.cost, currency = excluded.currency,"
            " mandatory = excluded.mandatory, risk = excluded.risk,"
            " withdrawn = excluded.withdrawn, revision = excluded.revision,"
            " submission_id = excluded.submission_id,"
            " possible_duplicates = excluded.possible_duplicates, updated_at = now()"
            " WHERE projects.revision IS NULL OR projects.revision < excluded.revision",
            [
                (
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
                    json.dumps([d.model_dump() for d in e.possible_duplicates]),
                )
                for e in events
            ],
        )

    async def apply_scores(self, events: Sequence[ProjectScored]) -> None:
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, score, rank, explanation,"
            " ranking_version, model, model_version, score_cause, override)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb)"
            " ON CONFLICT (project_key) DO UPDATE SET score = excluded.score,"
            " rank = excluded.rank, explanation = excluded.explanation,"
            " ranking_version = excluded.ranking_version, model = excluded.model,"
            " model_version = excluded.model_version, score_cause = excluded.score_cause,"
            " override = excluded.override, updated_at = now()"
            " WHERE projects.ranking_version IS NULL"
            " OR projects.ranking_version < excluded.ranking_version",
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
                for e in events
            ],
        )

    async def apply_plans(self, events: Sequence[ProjectPlanned]) -> None:
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, plan_status, start_month, end_month,"
            " deferral, plan_version) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)"
            " ON CONFLICT (project_key) DO UPDATE SET plan_status = excluded.plan_status,"
            " start_month = excluded.start_month, end_month = excluded.end_month,"
            " deferral = excluded.deferral, plan_version = excluded.plan_version,"
            " updated_at = now()"
            " WHERE projects.plan_version IS NULL OR projects.plan_version < excluded.plan_version",
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
                for e in events
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


class ReportingUnitOfWork(PostgresUnitOfWork):
    read_model: ReadModelWriter

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.read_model = ReadModelWriter(conn)


class ReadModelQueries:
    """The API's reads; each is one statement on the pool (no transaction needed)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def projects(
        self, portfolio: str, *, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        rows = await self._pool.fetch(
            "SELECT count(*) OVER () AS total, project_key, source, external_id, name, stage,"
            " program, sponsor, value, cost, currency, mandatory, withdrawn, revision, score,"
            " rank, explanation, model, model_version, score_cause, override,"
            " possible_duplicates, plan_status, start_month, end_month, deferral"
            " FROM projects WHERE portfolio = $1 AND revision IS NOT NULL"
            " ORDER BY rank NULLS LAST, project_key LIMIT $2 OFFSET $3",
            portfolio,
            limit,
            offset,
        )
        total = rows[0]["total"] if rows else 0
        items = []
        for r in rows:
            item = dict(r)
            item.pop("total")
            for name in ("explanation", "deferral", "override", "possible_duplicates"):
                item[name] = json.loads(item[name]) if item[name] is not None else None
            items.append(item)
        return total, items

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
