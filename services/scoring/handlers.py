"""Scoring's use case: apply project changes and analysts' commands, rescore what they affect,
re-rank each touched portfolio once, and publish every score or rank that moved and every
audit entry — all in one transaction per batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from services.scoring.domain.commands import check_model
from services.scoring.domain.inputs import ScoringInputs
from services.scoring.domain.ranking import Override, RankEntry, adjusted, rank
from services.scoring.domain.scoring import (
    Part,
    Scored,
    depends_on_month,
    depends_on_whole_portfolio,
    score_all,
)
from services.scoring.repository import PortfolioState, RankingRow, ScoringUnitOfWork
from shared.admission import admit, newest, refuse
from shared.cloudevents import event_message, headers
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectScored
from shared.contracts.scoring import (
    DEFAULT_MODEL,
    DEFAULT_NAME,
    SCORING_COMMAND,
    Adjust,
    ClearOverride,
    OverrideInfo,
    Pin,
    Rescore,
    ScoringAudit,
    SetModel,
)
from shared.deadletter import dead_letter_id
from shared.errors import Reason
from shared.events_io import decode_event, decode_json
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "scoring"
MAX_COMMAND_BYTES = 256 * 1024

Command = SetModel | Pin | Adjust | ClearOverride | Rescore


def decode_command(record: Record) -> tuple[str, Command] | list[Reason]:
    command = decode_json(record, SCORING_COMMAND, max_bytes=MAX_COMMAND_BYTES)
    if isinstance(command, list):
        return command
    return f"command:{command.command_id}", command


@dataclass(slots=True)
class _Work:
    """What a batch asks of one portfolio."""

    revised: set[str] = field(default_factory=set)
    overridden: set[str] = field(default_factory=set)
    full: str | None = None  # the cause of a full rescore, if one is due


class ScoringHandler:
    def __init__(
        self,
        uow: Callable[[], ScoringUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock

    def _decode(self, record: Record) -> tuple[str, Any] | list[Reason]:
        if self._topics.base(record.topic) == Topic.SCORING_COMMANDS:
            return decode_command(record)
        return decode_event(record, ProjectChanged)

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        as_of = now.year * 12 + now.month - 1
        async with self._uow() as uow:
            batch = await admit(
                uow,
                records,
                self._decode,
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            out = list(batch.dead_letters)
            work: dict[str, _Work] = defaultdict(_Work)
            await uow.lock(*sorted({item.portfolio for _, item in batch.items}))
            events = [e for _, e in batch.items if isinstance(e, ProjectChanged)]
            known = await uow.projects.revisions({e.project_key for e in events})
            latest = newest(events, lambda e: e.project_key, lambda e: e.revision, known)
            await uow.projects.save_inputs(
                [
                    (
                        e.project_key,
                        e.portfolio,
                        e.revision,
                        e.withdrawn,
                        e.project.model_dump_json(),
                        ScoringInputs.of(e.project_key, e.project, e.withdrawn),
                    )
                    for e in latest
                ]
            )
            for e in latest:
                work[e.portfolio].revised.add(e.project_key)
            for record, item in batch.items:
                if not isinstance(item, ProjectChanged):
                    out += await self._command(uow, record, item, work[item.portfolio], now)
            for portfolio in sorted(work):
                out += await self._rank(uow, portfolio, work[portfolio], as_of, now)
            await uow.emit(out)

    async def _command(
        self, uow: ScoringUnitOfWork, record: Record, command: Command, work: _Work, now: datetime
    ) -> list[OutboxMessage]:
        repo = uow.projects
        reasons: list[Reason] = []
        detail: dict[str, Any] = {}
        if isinstance(command, SetModel):
            reasons = check_model(command.model)
            if not reasons:
                state = await repo.portfolio(command.portfolio)
                version = state.model_version + 1
                await repo.add_model(
                    command.portfolio,
                    version,
                    command.model,
                    author=command.author,
                    comment=command.comment,
                    command_id=str(command.command_id),
                    at=command.issued_at,
                )
                await repo.save_portfolio(
                    command.portfolio,
                    PortfolioState(
                        state.ranking_version, version, command.model, state.as_of_month
                    ),
                )
                work.full = "model_change"
                detail = {"model_version": version, "model": command.model.model_dump(mode="json")}
        elif isinstance(command, Rescore):
            work.full = work.full or "rescore"
        else:
            key = command.project_key
            if not key.startswith(f"{command.portfolio}/") or not await repo.exists(key):
                reasons = [
                    Reason(
                        "unknown_project", f"no project {key} in {command.portfolio}", "project_key"
                    )
                ]
            else:
                override = _override(command)
                await repo.set_override(command.portfolio, key, override, command.issued_at)
                work.overridden.add(key)
                detail = {"project_key": key, "justification": command.justification}
                if override is not None:
                    detail.update(
                        {"kind": override.kind, "rank": override.rank, "delta": override.delta}
                    )
        out: list[OutboxMessage] = []
        if reasons:
            # A refused command has no effect: its id is free for a corrected resend.
            await uow.release([f"command:{command.command_id}"])
            if not await uow.claim([dead_letter_id(SERVICE, record)]):
                return []
            out.append(
                refuse(
                    record,
                    reasons,
                    consumer=SERVICE,
                    topic=self._topics(Topic.DEAD_LETTERS),
                    now=now,
                )
            )
            detail = {"reasons": [r.as_dict() for r in reasons]}
        entry = ScoringAudit(
            command_id=str(command.command_id),
            portfolio=command.portfolio,
            action=command.action,
            author=command.author,
            at=command.issued_at,
            outcome="refused" if reasons else "applied",
            detail=detail,
            comment=command.comment,
        )
        await repo.audit(entry)
        out.append(
            event_message(
                topic=self._topics(Topic.SCORING_AUDIT),
                key=command.portfolio,
                event=entry,
                event_id=f"scoring-audit:{command.command_id}",
                source="pmo/scoring",
                time=now,
            )
        )
        return out

    async def _rank(
        self, uow: ScoringUnitOfWork, portfolio: str, work: _Work, as_of: int, now: datetime
    ) -> list[OutboxMessage]:
        repo = uow.projects
        state = await repo.portfolio(portfolio)
        model = state.model.model if state.model else DEFAULT_MODEL
        name = state.model.name if state.model else DEFAULT_NAME
        full = work.full
        if full is None and work.revised and depends_on_whole_portfolio(model):
            full = "portfolio_change"
        if full is None and depends_on_month(model) and state.as_of_month != as_of:
            full = "rescore"
        inputs = await repo.inputs(portfolio, None if full else work.revised)
        scores: dict[str, Scored] = score_all(inputs, model, as_of=as_of)
        # Read before the new scores are written: the ranking takes them from ``scores``, so
        # scores, ranks and what was published are written in one statement below.
        rows = await repo.ranking(portfolio)
        overrides = await repo.overrides(portfolio)
        final = {
            r.key: adjusted(
                scores[r.key].score if r.key in scores else r.score, overrides.get(r.key)
            )
            for r in rows
        }
        ranks = rank(
            (RankEntry(r.key, r.mandatory, final[r.key]) for r in rows if r.ranked), overrides
        )
        infos = {key: _info(o) for key, o in overrides.items()}
        shown = {key: info.model_dump_json() for key, info in infos.items() if info is not None}
        moved = [r for r in rows if _moved(r, final[r.key], ranks.get(r.key), shown.get(r.key))]
        version = state.ranking_version + (1 if moved else 0)
        await repo.save_portfolio(
            portfolio, PortfolioState(version, state.model_version, state.model, as_of)
        )
        stored = await repo.explanations(r.key for r in moved if r.key not in scores)
        await repo.save_results(
            {key: (s.score, to_json(s.explanation).decode()) for key, s in scores.items()},
            [(r.key, ranks.get(r.key), final[r.key], shown.get(r.key)) for r in moved],
        )
        if not moved:
            return []
        topic = self._topics(Topic.SCORES)
        messages = []
        for r in moved:
            override = overrides.get(r.key)
            explanation = list(scores[r.key].explanation if r.key in scores else stored[r.key])
            if override is not None and override.kind == "adjust" and override.delta is not None:
                explanation.append(
                    {
                        "criterion": "adjustment",
                        "raw": float(override.delta),
                        "normalised": 1.0,
                        "weight": 1.0,
                        "contribution": float(override.delta),
                    }
                )
            if r.key in work.revised:
                cause = "project_revision"
            elif full in ("model_change", "rescore"):
                cause = full
            elif r.key in work.overridden:
                cause = "override"
            else:
                cause = "portfolio_change"
            value = scored_json(
                project_key=r.key,
                portfolio=portfolio,
                project_revision=r.revision,
                ranking_version=version,
                model=name,
                model_version=state.model_version,
                score=final[r.key],
                rank=ranks.get(r.key),
                mandatory=r.mandatory,
                explanation=explanation,
                cause=cause,
                override=infos.get(r.key),
            )
            messages.append(
                OutboxMessage(
                    topic=topic,
                    key=r.key.encode(),
                    value=value,
                    headers=headers(
                        event_id=f"scoring:{r.key}:{version}",
                        event_type=ProjectScored.TYPE,
                        source="pmo/scoring",
                        time=now,
                        subject=r.key,
                    ),
                )
            )
        return messages


def scored_json(
    *,
    project_key: str,
    portfolio: str,
    project_revision: int,
    ranking_version: int,
    model: str,
    model_version: int,
    score: float,
    rank: int | None,
    mandatory: bool,
    explanation: Sequence[Part],
    cause: str,
    override: OverrideInfo | None,
) -> bytes:
    """The JSON of ``ProjectScored`` with these fields, byte for byte what
    ``ProjectScored(...).model_dump_json()`` gives, without validating a model per project:
    every value is already of its contract type (the scoring rules make them), so validation
    would only spend the time of a 100,000-project rescore. Fields in the contract's order;
    the serialiser is pydantic's own, so floats are written as the contract writes them."""
    return to_json(
        {
            "project_key": project_key,
            "portfolio": portfolio,
            "project_revision": project_revision,
            "ranking_version": ranking_version,
            "model": model,
            "model_version": model_version,
            "score": float(score),
            "rank": rank,
            "mandatory": mandatory,
            "explanation": explanation,
            "cause": cause,
            "override": override,
        }
    )


def _override(command: Pin | Adjust | ClearOverride) -> Override | None:
    if isinstance(command, Pin):
        return Override("pin", command.justification, command.author, rank=command.rank)
    if isinstance(command, Adjust):
        return Override("adjust", command.justification, command.author, delta=command.delta)
    return None


def _info(override: Override | None) -> OverrideInfo | None:
    if override is None:
        return None
    return OverrideInfo(
        kind=override.kind,
        justification=override.justification,
        author=override.author,
        rank=override.rank,
        delta=override.delta,
    )


def _moved(row: RankingRow, score: float, new_rank: int | None, override: str | None) -> bool:
    published = row.published_override
    same_override = (published is None and override is None) or (
        published is not None
        and override is not None
        and OverrideInfo.model_validate_json(published)
        == OverrideInfo.model_validate_json(override)
    )
    return row.published_score != score or row.published_rank != new_rank or not same_override
