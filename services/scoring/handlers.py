"""Scoring's use case: apply project changes, rescore them, re-rank their portfolios, and
publish every score or rank that moved — all in one transaction per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from services.scoring.domain import DEFAULT_MODEL, RankEntry, WeightedModel, is_ranked, rank, score
from services.scoring.repository import ProjectRow, RankingRow, ScoringUnitOfWork
from shared.admission import admit, newest
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectScored
from shared.events_io import decode_event
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "scoring"


class ScoringHandler:
    def __init__(
        self,
        uow: Callable[[], ScoringUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        model: WeightedModel = DEFAULT_MODEL,
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._model = model

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        async with self._uow() as uow:
            batch = await admit(
                uow,
                records,
                lambda r: decode_event(r, ProjectChanged),
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            out = list(batch.dead_letters)
            events = [event for _, event in batch.items]
            portfolios = sorted({e.portfolio for e in events})
            await uow.lock(*portfolios)
            known = await uow.projects.revisions({e.project_key for e in events})
            latest = {
                e.project_key: e
                for e in newest(events, lambda e: e.project_key, lambda e: e.revision, known)
            }
            await uow.projects.upsert([self._row(e) for e in latest.values()])
            for portfolio in portfolios:
                rows = await uow.projects.ranking(portfolio)
                out += await self._rerank(uow, portfolio, rows, set(latest), now)
            await uow.emit(out)

    def _row(self, event: ProjectChanged) -> ProjectRow:
        scored = score(event.project, self._model)
        return ProjectRow(
            key=event.project_key,
            portfolio=event.portfolio,
            revision=event.revision,
            withdrawn=event.withdrawn,
            mandatory=event.project.mandatory,
            ranked=is_ranked(event.project, event.withdrawn),
            state_json=event.project.model_dump_json(),
            score=scored.score,
            explanation=scored.explanation,
        )

    async def _rerank(
        self,
        uow: ScoringUnitOfWork,
        portfolio: str,
        rows: list[RankingRow],
        revised: set[str],
        now: datetime,
    ) -> list[OutboxMessage]:
        ranks = rank(RankEntry(r.key, r.mandatory, r.score) for r in rows if r.ranked)
        moved = [
            r
            for r in rows
            if r.key in revised
            or r.published_rank != ranks.get(r.key)
            or r.published_score != r.score
        ]
        if not moved:
            return []
        version = await uow.projects.next_ranking_version(portfolio)
        explanations = await uow.projects.explanations(r.key for r in moved)
        await uow.projects.publish_ranks((r.key, ranks.get(r.key), r.score) for r in moved)
        topic = self._topics(Topic.SCORES)
        messages = []
        for r in moved:
            event = ProjectScored(
                project_key=r.key,
                portfolio=portfolio,
                project_revision=r.revision,
                ranking_version=version,
                model=self._model.name,
                model_version=self._model.version,
                score=r.score,
                rank=ranks.get(r.key),
                mandatory=r.mandatory,
                explanation=explanations[r.key],
                cause="project_revision" if r.key in revised else "portfolio_change",
            )
            messages.append(
                event_message(
                    topic=topic,
                    key=r.key,
                    event=event,
                    event_type=ProjectScored.TYPE,
                    event_id=f"scoring:{r.key}:{version}",
                    source="pmo/scoring",
                    time=now,
                )
            )
        return messages
