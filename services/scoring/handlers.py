"""Scoring's use case: apply project changes and analysts' commands, rescore what they affect,
re-rank each touched portfolio once, and publish every score that changed (ScoresChanged, many
projects a record) and every audit entry, in one transaction per batch. Ranks that only moved
(RankingChanged, a few bytes a project) go out with the batch, or, with a settle time, once it
is due: once the portfolio has had no batch for the settle time, and at the latest by a bound from
its first pending move, so a steady feed publishes each portfolio's moves about once per bound,
not once per batch."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, get_args

import numpy as np
from pydantic_core import to_json

from services.scoring.domain.commands import check_model
from services.scoring.domain.inputs import InputColumns, ScoringInputs
from services.scoring.domain.ranking import Override, adjusted, rank_rows
from services.scoring.domain.scoring import (
    depends_on_month,
    depends_on_whole_portfolio,
    float_texts,
    score_columns,
)
from services.scoring.repository import (
    PortfolioRows,
    PortfolioState,
    ScoringRepository,
    ScoringUnitOfWork,
)
from shared.admission import admit, newest, per_project, refuse
from shared.cloudevents import batched_messages, event_message
from shared.consumer_record import Record
from shared.contracts.events import (
    ProjectChanged,
    ProjectsChanged,
    RankChange,
    RankingChanged,
    ScoreCause,
    ScoresChanged,
)
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
    ScoringModel,
    SetModel,
)
from shared.deadletter import dead_letter_id
from shared.errors import Reason
from shared.events_io import decode_json, decode_typed
from shared.loops import Isolation, keep_running
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "scoring"
# How many projects' rows a replica keeps in memory between batches, those of the portfolios
# written most recently (about 110 bytes a project).
KEPT_ROWS = 1_000_000
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
    # (revision, mandatory, ranked) of each project whose inputs the batch saved
    saved: dict[str, tuple[int, bool, bool]] = field(default_factory=dict)
    overridden: set[str] = field(default_factory=set)
    full: str | None = None  # the cause of a full rescore, if one is due


class ScoringHandler:
    def __init__(
        self,
        uow: Callable[[], ScoringUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        *,
        settle_after: timedelta = timedelta(0),
        settle_within: timedelta | None = None,
    ) -> None:
        """``settle_after``: how long a portfolio's batches must pause before the rank moves of
        projects that were only pushed along its ranking are published (zero: with the batch
        that moved them); ``settle_within``: the longest those moves wait, counted from the
        first of them, however steady the portfolio's batches (``settle_after`` if not given
        or shorter: then they wait that long from the first, whatever follows)."""
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._settle_after = settle_after
        self._settle_within = max(settle_within or settle_after, settle_after)
        self._isolation = Isolation("settling the ranks of")
        # Each portfolio's rows as this replica's last committed transaction left them, with
        # their token: the next batch reads the portfolio only if another token came since.
        self._rows: OrderedDict[str, tuple[int, PortfolioRows]] = OrderedDict()

    def _decode(self, record: Record) -> tuple[str, Any] | list[Reason]:
        if self._topics.base(record.topic) == Topic.SCORING_COMMANDS:
            return decode_command(record)
        return decode_typed(record, ProjectChanged, ProjectsChanged)

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        as_of = now.year * 12 + now.month - 1
        kept: dict[str, tuple[int, PortfolioRows]] = {}
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
            events = per_project([e for _, e in batch.items], ProjectsChanged, ProjectChanged)
            known = await uow.projects.revisions({e.project_key for e in events})
            latest = newest(events, lambda e: e.project_key, lambda e: e.revision, known)
            saved = [
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
            await uow.projects.save_inputs(saved)
            for key, portfolio, revision, _, _, inputs in saved:
                work[portfolio].revised.add(key)
                work[portfolio].saved[key] = (revision, inputs.mandatory, inputs.ranked)
            for record, item in batch.items:
                if not isinstance(item, ProjectChanged | ProjectsChanged):
                    out += await self._command(uow, record, item, work[item.portfolio], now)
            for portfolio in sorted(work):
                out += await self._rank(
                    uow,
                    portfolio,
                    work[portfolio],
                    as_of,
                    now,
                    settle=not self._settle_after,
                    kept=kept,
                )
            await uow.emit(out)
        self._keep(kept)

    def _keep(self, kept: dict[str, tuple[int, PortfolioRows]]) -> None:
        """After the commit: the rows of the portfolios it wrote, the oldest entries out."""
        self._rows.update(kept)
        for portfolio in kept:
            self._rows.move_to_end(portfolio)
        rows = sum(len(entry.keys) for _, entry in self._rows.values())
        while rows > KEPT_ROWS:
            _, (_, oldest) = self._rows.popitem(last=False)
            rows -= len(oldest.keys)

    # --- settling ranks ----------------------------------------------------------------------

    async def settle_due(self, limit: int = 100) -> int:
        """Publish the pending rank moves of the portfolios due (up to ``limit``), each in its
        own transaction under its portfolio lock; returns how many were settled. A portfolio a
        batch holds is left for the next pass rather than waited for."""
        now = self._clock()
        as_of = now.year * 12 + now.month - 1
        async with self._uow() as uow:
            due = await uow.projects.ranks_due(now, limit)

        async def settle(portfolio: str) -> int:
            kept: dict[str, tuple[int, PortfolioRows]] = {}
            async with self._uow() as uow:
                if not await uow.try_lock(portfolio):
                    return 0
                state = await uow.projects.portfolio(portfolio)
                if state.ranks_due_at is None or state.ranks_due_at > now:
                    return 0  # settled by another replica, or by a batch
                await uow.emit(
                    await self._rank(uow, portfolio, _Work(), as_of, now, settle=True, kept=kept)
                )
            self._keep(kept)
            return 1

        # A defect met by one portfolio does not stop the settling of the others: it is logged
        # and retried after 30 s (its moves stay pending, and its next batch settles them too).
        settled = 0
        for portfolio in due:
            settled += await self._isolation.run(portfolio, partial(settle, portfolio))
        return settled

    async def run_settler(self) -> None:
        """Settle due portfolios until cancelled, polling four times per settle time (every
        second with none: for moves left pending under an earlier setting)."""
        poll = max(0.02, self._settle_after.total_seconds() / 4) if self._settle_after else 1.0

        async def settle() -> bool:
            return await self.settle_due() >= 100

        await keep_running("rank settler", settle, lambda: asyncio.sleep(poll))

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
                    command.portfolio, replace(state, model_version=version, model=command.model)
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
        self,
        uow: ScoringUnitOfWork,
        portfolio: str,
        work: _Work,
        as_of: int,
        now: datetime,
        *,
        settle: bool,
        kept: dict[str, tuple[int, PortfolioRows]],
    ) -> list[OutboxMessage]:
        """Rescore what ``work`` asks, re-rank the portfolio and publish what changed. Rank
        moves of projects nothing else changed for are published now if ``settle``, and left
        for the portfolio's settle time otherwise. The portfolio's rows as this transaction
        leaves them go into ``kept``, to be kept once it has committed."""
        repo = uow.projects
        state, overrides = await repo.ranking_state(portfolio)
        # Out until the commit: a transaction that fails leaves nothing kept to trust.
        cached = self._rows.pop(portfolio, None)
        # A batch settles a portfolio whose moves are due itself: the settler only tries the
        # lock, and back-to-back batches of a busy portfolio could keep it out indefinitely.
        settle = settle or (state.ranks_due_at is not None and state.ranks_due_at <= now)
        model = state.model.model if state.model else DEFAULT_MODEL
        name = state.model.name if state.model else DEFAULT_NAME
        full = work.full
        if full is None and work.revised and depends_on_whole_portfolio(model):
            full = "portfolio_change"
        if full is None and depends_on_month(model) and state.as_of_month != as_of:
            full = "rescore"
        # The ranking needs every project's score, rank and published state; a full rescore
        # also their inputs, read in the same query. Rows are in key order. Those this replica
        # kept are current if no other transaction has written the portfolio since.
        if full is None and cached is not None and cached[0] == state.rows_token:
            rows = cached[1].revised(work.saved)
        else:
            rows = await repo.rows(portfolio, inputs=full is not None)
        keys = rows.keys
        if rows.inputs is not None:
            scored = score_columns(rows.inputs, model, as_of=as_of)
            at = np.arange(len(keys))
        else:
            inputs = InputColumns.of(await repo.inputs(work.revised))
            scored = score_columns(inputs, model, as_of=as_of)
            at = np.array([rows.position(key) for key in scored.keys], dtype=np.intp)
        scores = rows.score.copy()
        scores[at] = scored.scores
        final = scores.copy()
        for key, o in overrides.items():
            if (i := rows.position(key)) is not None:
                final[i] = adjusted(float(scores[i]), o)
        ranks = rank_rows(keys, rows.mandatory, final, rows.ranked, overrides)
        infos = {key: _info(o) for key, o in overrides.items()}
        shown = {key: info.model_dump_json() for key, info in infos.items() if info is not None}
        score_moved = rows.published_score != final
        override_moved = np.zeros(len(keys), dtype=np.bool_)
        for key in rows.published_override.keys() | shown.keys():
            i = rows.position(key)
            if i is not None and not _same_override(
                rows.published_override.get(key), shown.get(key)
            ):
                override_moved[i] = True
        moved_mask = score_moved | override_moved | (rows.published_rank != ranks)
        rescored = np.zeros(len(keys), dtype=np.bool_)
        rescored[at] = True
        # A project rescored in this pass, or whose score or override changed, is published in
        # full (ScoresChanged); one that only moved in the ranking, as a rank (RankingChanged),
        # when its portfolio's ranks settle if ``settle`` is False.
        own = rescored | score_moved | override_moved
        pending = settle is False and bool(np.any(moved_mask & ~own))
        if pending:
            moved_mask &= own
        moved = np.flatnonzero(moved_mask).tolist()
        version = state.ranking_version + (1 if moved else 0)
        # Pending moves are due once the portfolio's batches pause for the settle time, and by
        # the bound set when the first of them went pending at the latest. A portfolio that
        # pending moves were left for under an earlier version has no bound: its due time is.
        settle_by = due = None
        if pending:
            settle_by = state.ranks_settle_by or state.ranks_due_at or now + self._settle_within
            due = min(settle_by, now + self._settle_after)
        token = secrets.randbits(63)
        await repo.save_portfolio(
            portfolio,
            PortfolioState(version, state.model_version, state.model, as_of, due, token, settle_by),
        )
        explanation_of = dict(zip(at.tolist(), scored.explanations, strict=True))
        in_full = np.flatnonzero(moved_mask & own).tolist()
        shifted = np.flatnonzero(moved_mask & ~own)
        moved_keys = [keys[i] for i in moved]
        moved_ranks = [r or None for r in ranks[moved].tolist()]
        moved_scores = final[moved].tolist()
        await repo.save_results(
            (scored.keys, scored.scores.tolist()),
            (moved_keys, moved_ranks, moved_scores, [shown.get(k) for k in moved_keys]),
        )
        kept[portfolio] = (token, rows.saved(scores, moved, ranks, final, shown))
        if not moved:
            return []
        full_keys = [keys[i] for i in in_full]
        unscored = [key for i, key in zip(in_full, full_keys, strict=True) if not rescored[i]]
        explained = await _explanations(repo, portfolio, model, as_of, unscored)
        explanations = []
        causes = []
        for i, key in zip(in_full, full_keys, strict=True):
            explanation = explanation_of[i] if rescored[i] else explained[key]
            override = overrides.get(key)
            if override is not None and override.kind == "adjust" and override.delta is not None:
                explanation = _with_adjustment(explanation, override.delta)
            explanations.append(explanation)
            if key in work.revised:
                causes.append("project_revision")
            elif full in ("model_change", "rescore"):
                causes.append(full)
            elif key in work.overridden:
                causes.append("override")
            else:
                causes.append("portfolio_change")
        full_ranks = [r or None for r in ranks[in_full].tolist()]
        entries = score_entries(
            keys=full_keys,
            revisions=rows.revision[in_full].tolist(),
            scores=final[in_full].tolist(),
            ranks=full_ranks,
            mandatory=rows.mandatory[in_full].tolist(),
            explanations=explanations,
            causes=causes,
            overrides=[None if (t := shown.get(key)) is None else t.encode() for key in full_keys],
        )
        topic = self._topics(Topic.SCORES)
        messages = scores_changed(
            topic,
            portfolio=portfolio,
            ranking_version=version,
            model=name,
            model_version=state.model_version,
            entries=entries,
            now=now,
        )
        return messages + ranking_changed(
            topic,
            portfolio,
            version,
            [keys[i] for i in shifted.tolist()],
            [r or None for r in ranks[shifted].tolist()],
            now,
        )


async def _explanations(
    repo: ScoringRepository, portfolio: str, model: ScoringModel, as_of: int, keys: list[str]
) -> dict[str, bytes]:
    """The explanations of projects published in full without being rescored (an override
    changed), made again by the scoring rules: the scores they explain were made from the same
    inputs, model and month, since a change of any of them rescores the project (a new
    revision, a model, a month its model counts, or for a model normalised over the portfolio,
    any project's revision). Under such a model a project's explanation depends on the whole
    portfolio, so the whole portfolio is scored again."""
    if not keys:
        return {}
    if depends_on_whole_portfolio(model):
        columns = (await repo.rows(portfolio, inputs=True)).inputs
        assert columns is not None
    else:
        columns = InputColumns.of(await repo.inputs(keys))
    scored = score_columns(columns, model, as_of=as_of)
    wanted = set(keys)
    return {
        key: explanation
        for key, explanation in zip(scored.keys, scored.explanations, strict=True)
        if key in wanted
    }


def ranking_changed(
    topic: str,
    portfolio: str,
    version: int,
    keys: Sequence[str],
    ranks: Sequence[int | None],
    now: datetime,
) -> list[OutboxMessage]:
    """``RankingChanged`` events for projects that only moved in the ranking, at most
    ``RankingChanged.MAX_RANKS`` a record, keyed by the portfolio (the partition of its
    ``ScoresChanged`` events, so consumers see both in the order they were written)."""
    out = []
    for part, start in enumerate(range(0, len(keys), RankingChanged.MAX_RANKS)):
        end = start + RankingChanged.MAX_RANKS
        event = RankingChanged(
            portfolio=portfolio,
            ranking_version=version,
            ranks=[
                RankChange(project_key=k, rank=r)
                for k, r in zip(keys[start:end], ranks[start:end], strict=True)
            ],
        )
        out.append(
            event_message(
                topic=topic,
                key=portfolio,
                event=event,
                event_id=f"scoring-ranks:{portfolio}:{version}:{part}",
                source="pmo/scoring",
                time=now,
            )
        )
    return out


_CAUSES = {cause: to_json(cause) for cause in get_args(ScoreCause)}
_ENTRY = (
    b'{"project_key":%s,"project_revision":%d,"score":%s,"rank":%s,"mandatory":%s,'
    b'"explanation":%s,"cause":%s,"override":%s}'
)


def score_entries(
    *,
    keys: Sequence[str],
    revisions: Sequence[int],
    scores: Sequence[float],
    ranks: Sequence[int | None],
    mandatory: Sequence[bool],
    explanations: Sequence[bytes],
    causes: Sequence[str],
    overrides: Sequence[bytes | None],
) -> list[bytes]:
    """The JSON of each project's ``ProjectScore`` entry, byte for byte what the contract's
    serialiser gives, without validating a model per project: every value is already of its
    contract type (the scoring rules make them, and explanations and overrides come as their
    contract JSON), so validation would only spend the time of a 100,000-project rescore.
    Fields are in the contract's order; strings and numbers are written by pydantic's
    serialiser, as the contract writes them."""
    return [
        _ENTRY
        % (
            to_json(key),
            revision,
            score,
            b"null" if rank is None else b"%d" % rank,
            b"true" if is_mandatory else b"false",
            explanation,
            _CAUSES[cause],
            b"null" if override is None else override,
        )
        for key, revision, score, rank, is_mandatory, explanation, cause, override in zip(
            keys,
            revisions,
            float_texts(scores),
            ranks,
            mandatory,
            explanations,
            causes,
            overrides,
            strict=True,
        )
    ]


def scores_changed(
    topic: str,
    *,
    portfolio: str,
    ranking_version: int,
    model: str,
    model_version: int,
    entries: Sequence[bytes],
    now: datetime,
) -> list[OutboxMessage]:
    """``ScoresChanged`` records of these entries (``score_entries``), in order, each with at
    most ``ScoresChanged.MAX_SCORES`` entries and, unless one entry alone is larger, at most
    ``ScoresChanged.MAX_BYTES`` of JSON; keyed by the portfolio. The value is byte for byte the
    contract's serialisation (tested)."""
    empty = ScoresChanged(
        portfolio=portfolio,
        ranking_version=ranking_version,
        model=model,
        model_version=model_version,
        scores=[],
    )
    return batched_messages(
        topic=topic,
        key=portfolio,
        empty=empty,
        entries=entries,
        max_entries=ScoresChanged.MAX_SCORES,
        max_bytes=ScoresChanged.MAX_BYTES,
        event_id=f"scoring-scores:{portfolio}:{ranking_version}",
        source="pmo/scoring",
        time=now,
    )


def _with_adjustment(explanation: bytes, delta: float) -> bytes:
    """The explanation with the analyst's adjustment as its last line, so the contributions
    still add up to the score."""
    line = to_json(
        {
            "criterion": "adjustment",
            "raw": float(delta),
            "normalised": 1.0,
            "weight": 1.0,
            "contribution": float(delta),
        },
        inf_nan_mode="null",
    )
    return explanation[:-1] + (b"," if explanation != b"[]" else b"") + line + b"]"


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


def _same_override(published: str | None, shown: str | None) -> bool:
    """Whether the override published (as stored) is the one shown now."""
    if published is None or shown is None:
        return published is None and shown is None
    return OverrideInfo.model_validate_json(published) == OverrideInfo.model_validate_json(shown)
