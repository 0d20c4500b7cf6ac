"""The handler on real Postgres, batch after batch: what it has published, taken as a consumer
takes it (the latest event per project), always equals a from-scratch scoring and ranking of
the portfolio as it stands, whether the batch rescored the whole portfolio or only the projects
it revised, and every event is the contract's own serialisation."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.scoring import repository as scoring_repository
from services.scoring.domain.inputs import ScoringInputs
from services.scoring.domain.ranking import Override, RankEntry, adjusted, rank
from services.scoring.domain.scoring import score_all
from services.scoring.handlers import ScoringHandler
from services.scoring.repository import ScoringUnitOfWork
from shared.consumer_record import Record
from shared.contracts.events import (
    ProjectChanged,
    ProjectsChanged,
    ProjectScored,
    ProjectState,
    RankingChanged,
    ScoresChanged,
)
from shared.contracts.scoring import DEFAULT_MODEL, ModelEnvelope
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from shared.topics import Topic, TopicNames
from tests.conftest import service_url

pytestmark = pytest.mark.integration

NOW = datetime(2027, 3, 10, tzinfo=UTC)
AS_OF = 2027 * 12 + 2
NAMES = TopicNames("")
MODELS: list[dict[str, Any]] = [
    {"method": "weighted", "weights": {"strategic_fit": 2, "value_for_money": 1, "risk": 1}},
    {
        "method": "weighted",
        "weights": {"value": 1, "cost": 1, "urgency": 2},
        "normalisation": "portfolio",
    },
    {"method": "wsjf"},
]


def _project(rnd: random.Random, external_id: str) -> dict[str, Any]:
    project: dict[str, Any] = {
        "name": external_id,
        "portfolio": "p",
        "source": "s",
        "external_id": external_id,
        "stage": rnd.choice(["idea", "proposal", "approved", "done"]),
        "mandatory": rnd.random() < 0.1,
        "strategic_fit": {o: rnd.randint(0, 5) for o in rnd.sample(["a", "bb", "c"], 2)},
        "risk": rnd.randint(1, 5),
        "demand": [{"role": "dev", "fte": 1.0, "start_month": 0, "months": rnd.randint(1, 9)}],
    }
    if rnd.random() < 0.8:
        project["value"] = rnd.choice([0.0, 1e5, 3e6, round(rnd.uniform(1, 1e7), 2)])
        project["cost"] = rnd.choice([1e5, 2e6, round(rnd.uniform(1, 1e7), 2)])
    if rnd.random() < 0.6:
        project["deadline"] = f"2027-{rnd.randint(1, 12):02d}"
    if rnd.random() < 0.5:
        project["wsjf"] = {
            "business_value": rnd.randint(1, 20),
            "time_criticality": rnd.randint(1, 20),
            "risk_reduction": rnd.randint(1, 20),
            "job_size": rnd.randint(1, 13),
        }
    return project


def _record(
    topic: Topic, key: str, value: Any, event_id: str, offset: int, event_type: str | None = None
) -> Record:
    headers = [("ce_id", event_id.encode())]
    if event_type is not None:
        headers.append(("ce_type", event_type.encode()))
    return Record(
        topic=NAMES(topic),
        partition=0,
        offset=offset,
        key=key.encode(),
        value=json.dumps(value).encode(),
        headers=tuple(headers),
        timestamp_ms=0,
    )


class Portfolio:
    """What the test knows of the portfolio, and the records that make it so."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.states: dict[str, ProjectState] = {}
        self.revisions: dict[str, int] = {}
        self.overrides: dict[str, Override] = {}
        self.model: dict[str, Any] | None = None
        self.offset = 0

    def _next(self) -> int:
        self.offset += 1
        return self.offset

    def revise(self, external_id: str) -> Record:
        key = f"p/s/{external_id}"
        self.revisions[key] = self.revisions.get(key, 0) + 1
        state = ProjectState.model_validate(_project(self.rnd, external_id))
        self.states[key] = state
        event = ProjectChanged(
            project_key=key,
            portfolio="p",
            revision=self.revisions[key],
            submission_id=str(uuid.uuid4()),
            occurred_at=NOW,
            project=state,
        )
        if self.rnd.random() < 0.5:  # as earlier versions of intake wrote it, a record each
            return _record(
                Topic.PROJECTS,
                key,
                event.model_dump(mode="json"),
                f"intake:{key}:{self.revisions[key]}",
                self._next(),
            )
        batched = ProjectsChanged(portfolio="p", changes=[event])
        return _record(
            Topic.PROJECTS,
            "p",
            batched.model_dump(mode="json"),
            f"intake-projects:p:{event.submission_id}:0",
            self._next(),
            ProjectsChanged.TYPE,
        )

    def command(self, action: str, **fields: Any) -> Record:
        body = {
            "command_id": str(uuid.uuid4()),
            "portfolio": "p",
            "author": "analyst@test",
            "issued_at": NOW.isoformat(),
            "action": action,
            **fields,
        }
        if action == "pin":
            self.overrides[fields["project_key"]] = Override(
                "pin", fields["justification"], "analyst@test", rank=fields["rank"]
            )
        elif action == "adjust":
            self.overrides[fields["project_key"]] = Override(
                "adjust", fields["justification"], "analyst@test", delta=fields["delta"]
            )
        elif action == "clear_override":
            self.overrides.pop(fields["project_key"], None)
        elif action == "set_model":
            self.model = fields["model"]["model"]
        return _record(Topic.SCORING_COMMANDS, "p", body, body["command_id"], self._next())

    def expected(self) -> dict[str, tuple[float, int | None, list[dict[str, Any]]]]:
        """(score, rank, explanation) of every project, scored and ranked from scratch."""
        model = (
            ModelEnvelope.model_validate({"name": "m", "model": self.model}).model
            if self.model
            else DEFAULT_MODEL
        )
        inputs = [ScoringInputs.of(k, s, withdrawn=False) for k, s in self.states.items()]
        scored = score_all(inputs, model, as_of=AS_OF)
        final = {k: adjusted(s.score, self.overrides.get(k)) for k, s in scored.items()}
        ranks = rank(
            (RankEntry(p.key, p.mandatory, final[p.key]) for p in inputs if p.ranked),
            self.overrides,
        )
        result = {}
        for key, s in scored.items():
            explanation = [dict(c) for c in s.explanation]
            override = self.overrides.get(key)
            if override is not None and override.kind == "adjust":
                explanation.append(
                    {
                        "criterion": "adjustment",
                        "raw": override.delta,
                        "normalised": 1.0,
                        "weight": 1.0,
                        "contribution": override.delta,
                    }
                )
            result[key] = (final[key], ranks.get(key), explanation)
        return result


async def _scoring(
    database: DatabaseSettings, settle: int, within: int | None = None
) -> tuple[asyncpg.Pool[Any], ScoringHandler, list[datetime]]:
    """Scoring's pool on a migrated database, and a handler whose clock is the list's item:
    rank moves settle ``settle`` seconds after the portfolio's last batch, and ``within``
    seconds of the first pending move at the latest (``settle`` if None)."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )
    clock = [NOW]
    return pool, _replica(pool, clock, settle, within), clock


def _replica(
    pool: asyncpg.Pool[Any], clock: list[datetime], settle: int, within: int | None = None
) -> ScoringHandler:
    """Another handler on ``pool`` with the same clock and settle times (``_scoring``), as a
    second replica, or one started after a restart, has."""
    return ScoringHandler(
        lambda: ScoringUnitOfWork(pool),
        NAMES,
        lambda: clock[0],
        settle_after=timedelta(seconds=settle),
        settle_within=None if within is None else timedelta(seconds=within),
    )


async def _moves_published(pool: asyncpg.Pool[Any]) -> int:
    """How many ``RankingChanged`` records the outbox holds."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE headers ->> 'ce_type' = $1", RankingChanged.TYPE
    )
    return count


@pytest.mark.parametrize("settle", [0, 1], ids=["moves-with-batch", "moves-settle"])
@pytest.mark.parametrize("staged", [False, True], ids=["written-in-one-update", "staged"])
@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "two-replicas"])
async def test_published_ranking_always_equals_a_full_recompute(
    database: DatabaseSettings,
    settle: int,
    staged: bool,
    replicas: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a settle time, each batch publishes its rescored projects (scores, explanations
    and their ranks exact at once) and no moves; the settler, once due, publishes the moves,
    and then the whole ranking is exact again. Results are written as a batch's few rows are
    (one UPDATE over arrays), or all staged as a rescore's many are. A replica keeps the rows
    it wrote between batches: with two, taking turns irregularly, each often finds that the
    other has written the portfolio since."""
    if staged:
        monkeypatch.setattr(scoring_repository, "COPY_ABOVE", 0)
    pool, first, clock = await _scoring(database, settle)
    handlers = [first] + [_replica(pool, clock, settle) for _ in range(replicas - 1)]
    turns = random.Random(11)

    def replica() -> ScoringHandler:
        return turns.choice(handlers)

    rnd = random.Random(5)
    portfolio = Portfolio(rnd)
    seen: dict[str, ProjectScored] = {}
    last_id = 0
    moved_only = 0  # ranks published as moves, without a score
    settled = 0

    async def published() -> tuple[set[str], int]:
        """Apply what was published since the last call, as a consumer would; returns the
        projects published in full and the number of moves."""
        nonlocal last_id
        async with pool.acquire() as conn:
            refused = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE topic = $1", NAMES(Topic.DEAD_LETTERS)
            )
            assert refused == 0, "every command of the test is valid"
            rows = await conn.fetch(
                "SELECT id, value, headers ->> 'ce_type' AS type FROM outbox"
                " WHERE id > $1 AND topic = $2 ORDER BY id",
                last_id,
                NAMES(Topic.SCORES),
            )
        in_full: set[str] = set()
        moves_seen = 0
        for row in rows:
            last_id = row["id"]
            if row["type"] == RankingChanged.TYPE:
                # Moves of projects whose score, explanation and override stand.
                moves = RankingChanged.model_validate_json(row["value"])
                moves_seen += len(moves.ranks)
                for move in moves.ranks:
                    assert seen[move.project_key].ranking_version < moves.ranking_version
                    seen[move.project_key] = seen[move.project_key].model_copy(
                        update={"rank": move.rank, "ranking_version": moves.ranking_version}
                    )
                continue
            assert row["type"] == ScoresChanged.TYPE
            event = ScoresChanged.model_validate_json(row["value"])
            assert row["value"] == event.model_dump_json().encode()
            for scored in event.projects():
                assert scored.project_key not in in_full, "one entry per project and version"
                seen[scored.project_key] = scored
                in_full.add(scored.project_key)
        return in_full, moves_seen

    try:
        for step in range(40):
            batch = [
                portfolio.revise(f"P{rnd.randrange(60):02d}") for _ in range(rnd.randint(1, 6))
            ]
            keys = sorted(portfolio.states)
            if step % 4 == 3:
                key = rnd.choice(keys)
                action = rnd.choice(["pin", "adjust", "clear_override"])
                fields: dict[str, Any] = {"project_key": key, "justification": "agreed at review"}
                if action == "pin":
                    fields["rank"] = rnd.randint(1, 30)
                elif action == "adjust":
                    fields["delta"] = rnd.choice([-7.5, 3.0, 12.25])
                batch.append(portfolio.command(action, **fields))
            if step == 30:
                batch.append(portfolio.command("rescore"))
            if step in (12, 24, 33):
                model = MODELS[(step // 12) % len(MODELS)]
                batch.append(
                    portfolio.command("set_model", model={"name": f"m{step}", "model": model})
                )
            await replica().handle(batch)
            in_full, moves = await published()
            moved_only += moves
            expected = portfolio.expected()
            if settle:
                assert moves == 0, f"batch {step} published moves before they settled"
                assert {
                    k: (e.score, [c.model_dump() for c in e.explanation]) for k, e in seen.items()
                } == {k: (score, explanation) for k, (score, _, explanation) in expected.items()}, (
                    f"after batch {step}"
                )
                assert {k: seen[k].rank for k in in_full} == {k: expected[k][1] for k in in_full}, (
                    f"after batch {step}"
                )
                assert await replica().settle_due() == 0, "not due yet"
                if step % 3 != 2:
                    continue
                clock[0] += timedelta(seconds=settle)
                settled += await replica().settle_due()
                in_full, moves = await published()
                assert not in_full, "settling publishes moves only"
                moved_only += moves
            shown = {
                k: (e.score, e.rank, [c.model_dump() for c in e.explanation])
                for k, e in seen.items()
            }
            assert shown == expected, f"after batch {step}"
        # New projects in front of others move them: those moves are ranks, not scores.
        assert moved_only > 0
        if settle:
            clock[0] += timedelta(seconds=settle)
            settled += await replica().settle_due()
            moved_only += (await published())[1]
            shown = {
                k: (e.score, e.rank, [c.model_dump() for c in e.explanation])
                for k, e in seen.items()
            }
            assert shown == portfolio.expected(), "after the last settle"
            assert settled > 0
            async with pool.acquire() as conn:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM portfolios WHERE ranks_due_at IS NOT NULL"
                )
            assert pending == 0, "nothing is left pending once settled"
    finally:
        await pool.close()


async def test_a_batch_publishes_moves_that_are_due_itself(database: DatabaseSettings) -> None:
    """The settler only tries a portfolio's lock, so back-to-back batches could keep it out: a
    batch that finds its portfolio's moves due publishes them."""
    pool, handler, clock = await _scoring(database, settle=1)
    portfolio = Portfolio(random.Random(7))

    async def due() -> datetime | None:
        at: datetime | None = await pool.fetchval(
            "SELECT ranks_due_at FROM portfolios WHERE portfolio = 'p'"
        )
        return at

    try:
        for i in range(12):
            await handler.handle([portfolio.revise(f"P{i:02d}")])
        assert await due() == NOW + timedelta(seconds=1), "moves are pending"
        assert await _moves_published(pool) == 0
        clock[0] = NOW + timedelta(seconds=1)
        await handler.handle([portfolio.revise("P00")])
        assert await due() is None
        assert await _moves_published(pool) == 1
    finally:
        await pool.close()


async def test_moves_settle_when_batches_pause_and_by_their_bound_under_a_steady_feed(
    database: DatabaseSettings,
) -> None:
    """Moves pending in a portfolio are due once its batches pause for the settle time (1 s
    here), and never later than the bound (5 s) from the first of them: batches every half
    second hold them back until the bound, and then a batch publishes them itself; one batch
    after a pause is settled a second later by the settler. The bound outlives a restart: a
    replica started meanwhile reads it with the portfolio."""
    pool, first, clock = await _scoring(database, settle=1, within=5)
    restarted = _replica(pool, clock, settle=1, within=5)
    portfolio = Portfolio(random.Random(7))

    async def state() -> tuple[datetime | None, datetime | None]:
        row = await pool.fetchrow(
            "SELECT ranks_due_at, ranks_settle_by FROM portfolios WHERE portfolio = 'p'"
        )
        assert row is not None
        return row["ranks_due_at"], row["ranks_settle_by"]

    try:
        for i in range(8):
            await first.handle([portfolio.revise(f"P{i:02d}")])
        clock[0] += timedelta(seconds=10)
        await first.settle_due()
        assert await state() == (None, None), "a start with nothing pending"
        published = await _moves_published(pool)
        # A steady feed: a batch every half second, each revising a project's figures.
        bound = None
        for step in range(1, 40):
            clock[0] += timedelta(milliseconds=500)
            handler = first if step < 4 else restarted
            await handler.handle([portfolio.revise(f"P{step % 8:02d}")])
            if await _moves_published(pool) > published:
                assert bound is not None, "moves were pending before"
                assert bound <= clock[0] < bound + timedelta(seconds=0.5), "the batch at the bound"
                assert await state() == (None, None)
                break
            due, settle_by = await state()
            if due is None:
                assert bound is None, "pending moves stay pending until published"
                continue
            bound = bound or clock[0] + timedelta(seconds=5)
            assert settle_by == bound, "the bound is set by the first pending move"
            assert due == min(bound, clock[0] + timedelta(seconds=1))
            assert await handler.settle_due() == 0, "not due while the batches go on"
        else:
            raise AssertionError("the steady feed never published its moves")
        # A pause: a batch's moves are settled a second after it, well before the bound.
        published = await _moves_published(pool)
        for step in range(8):
            clock[0] += timedelta(seconds=3)
            await restarted.handle([portfolio.revise(f"P{step:02d}")])
            due, settle_by = await state()
            if due is not None:
                break
        assert due == clock[0] + timedelta(seconds=1)
        assert settle_by == clock[0] + timedelta(seconds=5)
        clock[0] += timedelta(milliseconds=999)
        assert await restarted.settle_due() == 0
        clock[0] += timedelta(milliseconds=1)
        assert await restarted.settle_due() == 1
        assert await _moves_published(pool) == published + 1
        assert await state() == (None, None)
    finally:
        await pool.close()


AHP_PORTFOLIO = {
    "method": "ahp",
    "criteria": ["strategic_fit", "value_for_money", "risk"],
    "comparisons": {
        "strategic_fit": {"value_for_money": 3.0, "risk": 5.0},
        "value_for_money": {"risk": 2.0},
    },
    "normalisation": "portfolio",
}


@pytest.mark.parametrize(
    "model",
    [*MODELS, AHP_PORTFOLIO],
    ids=["weighted", "weighted-portfolio", "wsjf", "ahp-portfolio"],
)
async def test_an_override_alone_publishes_the_explanation_made_again(
    database: DatabaseSettings, model: dict[str, Any]
) -> None:
    """Explanations are not stored: a batch of override commands alone publishes its projects
    with explanations the scoring rules make again from their inputs (for a model normalised
    over the portfolio, from the whole portfolio's), equal to a from-scratch scoring's."""
    pool, handler, _ = await _scoring(database, settle=0)
    rnd = random.Random(11)
    portfolio = Portfolio(rnd)

    async def published_by(commands: list[Record]) -> dict[str, ProjectScored]:
        """The projects the batch of ``commands`` published in full."""
        async with pool.acquire() as conn:
            before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
            await handler.handle(commands)
            rows = await conn.fetch(
                "SELECT value FROM outbox WHERE id > $1 AND headers ->> 'ce_type' = $2",
                before,
                ScoresChanged.TYPE,
            )
        return {
            s.project_key: s
            for row in rows
            for s in ScoresChanged.model_validate_json(row["value"]).projects()
        }

    def explained(scored: ProjectScored) -> tuple[float, list[dict[str, Any]]]:
        return scored.score, [c.model_dump() for c in scored.explanation]

    try:
        await handler.handle(
            [portfolio.command("set_model", model={"name": "m", "model": model})]
            + [portfolio.revise(f"P{i:02d}") for i in range(30)]
        )
        keys = [  # ranked projects: a pin is refused for a project outside the ranking
            k
            for k, state in sorted(portfolio.states.items())
            if ScoringInputs.of(k, state, withdrawn=False).ranked
        ]
        why = {"justification": "agreed at review"}
        published = await published_by(
            [
                portfolio.command("adjust", project_key=keys[3], delta=4.5, **why),
                portfolio.command("pin", project_key=keys[9], rank=2, **why),
            ]
        )
        assert {keys[3], keys[9]} <= published.keys()
        assert {published[keys[3]].cause, published[keys[9]].cause} == {"override"}
        expected = portfolio.expected()
        for key, scored in published.items():
            assert explained(scored) == (expected[key][0], expected[key][2]), key
        assert published[keys[3]].explanation[-1].criterion == "adjustment"
        assert published[keys[9]].explanation, "a real explanation, not an empty one"

        # Cleared, the adjustment's line goes and the rules' explanation stays.
        published = await published_by(
            [portfolio.command("clear_override", project_key=keys[3], **why)]
        )
        assert published[keys[3]].cause == "override"
        expected = portfolio.expected()
        for key, scored in published.items():
            assert explained(scored) == (expected[key][0], expected[key][2]), key
        assert "adjustment" not in {c.criterion for c in published[keys[3]].explanation}
    finally:
        await pool.close()


async def test_a_writer_that_draws_no_rows_token_still_changes_it(
    database: DatabaseSettings,
) -> None:
    """A replica keeps a portfolio's rows with the token of the transaction that wrote them. A
    writer of an earlier release, during a rolling upgrade, rewrites the portfolio's row
    without a token of its own: the row gets a new one, so the replica reads the portfolio
    again rather than trust rows another writer has changed (migration 0007)."""
    pool, handler, _ = await _scoring(database, settle=0)
    try:
        await handler.handle([Portfolio(random.Random(3)).revise("P00")])
        kept = handler._rows["p"][0]
        async with pool.acquire() as conn:
            token = "SELECT rows_token FROM portfolios WHERE portfolio = 'p'"
            assert await conn.fetchval(token) == kept
            # What an earlier release's save_portfolio wrote: every column but the token.
            await conn.execute(
                "UPDATE portfolios SET ranking_version = ranking_version WHERE portfolio = 'p'"
            )
            assert await conn.fetchval(token) != kept
            await conn.execute("UPDATE portfolios SET rows_token = 42 WHERE portfolio = 'p'")
            assert await conn.fetchval(token) == 42, "a writer's own token stands"
    finally:
        await pool.close()
