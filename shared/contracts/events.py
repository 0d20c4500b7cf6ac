"""Internal events: immutable facts, one writing service per topic.

Each event travels as the Kafka value (JSON) with CloudEvents 1.0 attributes in the headers
(binary mode); the ``ce_id`` header is the idempotency key consumers record in their inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.common import Event
from shared.contracts.inbound import ProjectData, Stage
from shared.contracts.scoring import OverrideInfo

E = TypeVar("E", bound=BaseModel)


class ProjectState(ProjectData):
    """The full, normalised state of a project (event-carried state transfer). Written by
    intake from an already validated submission, so it is not strict about input types."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    portfolio: str
    source: str
    external_id: str


class PossibleDuplicate(Event):
    """Another project of the portfolio whose name closely matches (similarity 0..1)."""

    project_key: str
    external_id: str
    name: str
    similarity: float


class ProjectChange(Event):
    """One project's entry in ``ProjectsChanged``: intake accepted a submission, and this is
    the project's new full state (event-carried state transfer)."""

    project_key: str
    revision: int
    submission_id: str
    occurred_at: datetime
    withdrawn: bool = False
    previous_stage: Stage | None = None
    changed: list[str] = Field(default_factory=list)
    # Empty as intake publishes changes now: a new project's possible duplicates follow in
    # ``DuplicatesFound`` (pmo.intake.duplicates.v1), found off the submission's path. Earlier
    # versions named them here, and consumers still apply them from here.
    possible_duplicates: list[PossibleDuplicate] = Field(default_factory=list)
    project: ProjectState


class ProjectChanged(ProjectChange):
    """A project's new full state, a project a record (``pmo.intake.projects.v1``).

    Intake publishes accepted submissions as ``ProjectsChanged`` now, many projects a record;
    consumers still apply ``ProjectChanged``, which earlier versions published (keyed by the
    project), so records of either kind on the topic are read after an upgrade. It is also the
    form a consumer applies each entry of a ``ProjectsChanged`` in (``ProjectsChanged.projects``).
    """

    TYPE: ClassVar[str] = "pmo.intake.project.changed.v1"

    portfolio: str

    @model_validator(mode="after")
    def _of_its_portfolio(self) -> ProjectChanged:
        _check_keys(self.portfolio, [self])
        return self


class ProjectsChanged(Event):
    """The submissions of one portfolio that intake accepted in one batch, in the order they
    were applied (``pmo.intake.projects.v1``, keyed by portfolio): at most ``MAX_PROJECTS``
    entries and, unless one entry alone is larger, ``MAX_BYTES`` of JSON an event, so a batch
    may be split over several; each is complete on its own. A project may appear more than
    once, at increasing revisions.

    A consumer applies each entry as a ``ProjectChanged`` of the event's portfolio
    (``projects``): only over an older revision of the project."""

    TYPE: ClassVar[str] = "pmo.intake.projects.changed.v1"
    MAX_PROJECTS: ClassVar[int] = 500
    MAX_BYTES: ClassVar[int] = 256 * 1024

    portfolio: str
    changes: list[ProjectChange]

    @model_validator(mode="after")
    def _of_its_portfolio(self) -> ProjectsChanged:
        _check_keys(self.portfolio, self.changes)
        return self

    def projects(self) -> list[ProjectChanged]:
        """Each entry as the ``ProjectChanged`` it stands for (entries are already validated)."""
        return _each_as(ProjectChanged, ProjectChange, self.changes, self)


class ProjectDuplicates(Event):
    """One entry of ``DuplicatesFound``: the projects of the portfolio whose names closely
    match the name ``project_key`` was opened with at ``revision``, best first (none is an
    answer too: a project opened again drops the matches of its earlier opening)."""

    project_key: str
    revision: int
    possible_duplicates: list[PossibleDuplicate]


class DuplicatesFound(Event):
    """The possible duplicates of the projects that one ``ProjectsChanged`` opened
    (``pmo.intake.duplicates.v1``, keyed by portfolio), found by intake after it published the
    change, so that a submission is never held up by the search: at most ``MAX_PROJECTS``
    entries and, unless one entry alone is larger, ``MAX_BYTES`` of JSON an event. A consumer
    applies an entry only over the matches of an older revision of the project."""

    TYPE: ClassVar[str] = "pmo.intake.duplicates.found.v1"
    MAX_PROJECTS: ClassVar[int] = 500
    MAX_BYTES: ClassVar[int] = 256 * 1024

    portfolio: str
    projects: list[ProjectDuplicates]

    @model_validator(mode="after")
    def _of_its_portfolio(self) -> DuplicatesFound:
        prefix = f"{self.portfolio}/"
        for entry in self.projects:
            if not entry.project_key.startswith(prefix):
                raise ValueError(
                    f"project {entry.project_key} is not of the portfolio {self.portfolio}"
                )
        return self


class Contribution(Event):
    """One criterion's share of a score: what went in, how it was scaled, what it added."""

    criterion: str
    raw: float | None
    normalised: float
    weight: float
    contribution: float


ScoreCause = Literal["project_revision", "model_change", "override", "rescore", "portfolio_change"]


class ProjectScore(Event):
    """One project's entry in ``ScoresChanged``: its score, explanation, rank and override."""

    project_key: str
    project_revision: int
    score: float
    rank: int | None
    mandatory: bool
    explanation: list[Contribution]
    cause: ScoreCause
    override: OverrideInfo | None = None


class ProjectScored(ProjectScore):
    """A project's score and rank in its portfolio, a project a record (``pmo.scoring.scores.v1``).

    Scoring publishes scores as ``ScoresChanged`` now, many projects a record; consumers still
    apply ``ProjectScored``, which earlier versions published, so records of either kind on
    the topic are read after an upgrade. It is also the form a consumer applies each entry of
    a ``ScoresChanged`` in (``ScoresChanged.projects``).

    ``ranking_version`` increases with every re-ranking of the portfolio; a consumer keeps the
    highest it has seen. ``rank`` is None for projects that are not ranked (done, cancelled,
    rejected, withdrawn)."""

    TYPE: ClassVar[str] = "pmo.scoring.project.scored.v1"

    portfolio: str
    ranking_version: int
    model: str
    model_version: int


class ScoresChanged(Event):
    """Projects whose score, explanation or override changed in one re-ranking of a portfolio,
    with their new ranks (``pmo.scoring.scores.v1``, keyed by portfolio).

    A pass of scoring publishes every project it scored in full here: one project revised, or
    all 100,000 of a portfolio after a model change, split over several events of the same
    ``ranking_version`` (at most ``MAX_SCORES`` entries and about ``MAX_BYTES`` of JSON each,
    under the 1 MiB a consumer accepts); each is complete on its own. Moves of the projects
    whose score did not change come as ``RankingChanged``, on the same partition, after it.

    A consumer applies each entry as a ``ProjectScored`` of the event's portfolio, ranking
    version and model (``projects``): only over an older ranking version."""

    TYPE: ClassVar[str] = "pmo.scoring.scores.changed.v1"
    MAX_SCORES: ClassVar[int] = 500
    MAX_BYTES: ClassVar[int] = 256 * 1024

    portfolio: str
    ranking_version: int
    model: str
    model_version: int
    scores: list[ProjectScore]

    def projects(self) -> list[ProjectScored]:
        """Each entry as the ``ProjectScored`` it stands for (entries are already validated)."""
        return _each_as(ProjectScored, ProjectScore, self.scores, self)


class RankChange(Event):
    """One project's new rank; None when it left the ranking."""

    project_key: str
    rank: int | None


class RankingChanged(Event):
    """Projects whose rank moved while their score, explanation and override did not
    (``pmo.scoring.scores.v1``, keyed by portfolio, so it shares the partition of the
    portfolio's ``ScoresChanged`` events and arrives in order with them).

    A new project, or one whose score changed, moves the ranks of every project between its
    old and new place; those moves travel here, a few bytes each, instead of as a full score
    per moved project. A consumer applies each entry as it would the rank of a score of the
    same ``ranking_version``: only over an older version. A large move is split over several
    events of the same version (at most ``MAX_RANKS`` entries each); each is complete on its
    own. Moves settle: they follow the ``ScoresChanged`` that caused them once the portfolio's
    settle time is due, so until then two projects may share a rank."""

    TYPE: ClassVar[str] = "pmo.scoring.ranking.changed.v1"
    MAX_RANKS: ClassVar[int] = 5000

    portfolio: str
    ranking_version: int
    ranks: list[RankChange]


class Deferral(Event):
    """Why a project could not be placed. For ``capacity``: the first role and month that did
    not fit at the earliest start the window allowed, and by how many FTE."""

    code: Literal["capacity", "window", "dependency", "dependency_cycle"]
    detail: str
    role: str | None = None
    month: str | None = None
    shortfall_fte: float | None = None


PlanStatus = Literal["committed", "planned", "deferred", "excluded"]


class ProjectPlan(Event):
    """One project's entry in ``PlansChanged``: its place in the plan, or why it has none."""

    project_key: str
    status: PlanStatus
    start_month: str | None = None
    end_month: str | None = None
    deferral: Deferral | None = None


class ProjectPlanned(ProjectPlan):
    """A project's place in its portfolio's capacity plan, a project a record
    (``pmo.capacity.plans.v1``).

    Capacity publishes placements as ``PlansChanged`` now, many projects a record; reporting
    still applies ``ProjectPlanned``, which earlier versions published, and it is the form a
    consumer applies each entry of a ``PlansChanged`` in (``PlansChanged.projects``).

    ``plan_version`` increases with every replan of the portfolio."""

    TYPE: ClassVar[str] = "pmo.capacity.project.planned.v1"

    portfolio: str
    plan_version: int


class PlansChanged(Event):
    """The projects whose place in their portfolio's plan changed in one replan
    (``pmo.capacity.plans.v1``, keyed by portfolio): split over several events of the same
    ``plan_version`` when there are many (at most ``MAX_PLANS`` entries and ``MAX_BYTES`` of
    JSON each); each is complete on its own. A consumer applies each entry as a
    ``ProjectPlanned`` of the event's portfolio and plan version (``projects``): only over an
    older plan version."""

    TYPE: ClassVar[str] = "pmo.capacity.plans.changed.v1"
    MAX_PLANS: ClassVar[int] = 1000
    MAX_BYTES: ClassVar[int] = 256 * 1024

    portfolio: str
    plan_version: int
    plans: list[ProjectPlan]

    def projects(self) -> list[ProjectPlanned]:
        """Each entry as the ``ProjectPlanned`` it stands for (entries are already validated)."""
        return _each_as(ProjectPlanned, ProjectPlan, self.plans, self)


def _check_keys(portfolio: str, changes: Sequence[ProjectChange]) -> None:
    """A project's key is ``portfolio/source/external id`` (intake makes it so), and the state
    names the same portfolio: a consumer files the project under the event's portfolio, and one
    that did not match its key would be filed in two."""
    prefix = f"{portfolio}/"
    for change in changes:
        if not change.project_key.startswith(prefix) or change.project.portfolio != portfolio:
            raise ValueError(
                f"project {change.project_key} ({change.project.portfolio}) is not of the"
                f" portfolio {portfolio}"
            )


def _each_as(
    event: type[E], entry: type[BaseModel], entries: Sequence[BaseModel], record: BaseModel
) -> list[E]:
    """``entries`` of a record carrying many projects as the per-project ``event`` each stands
    for: the entry's own fields (those of ``entry``, whatever subclass an entry is) and the
    record's fields that ``event`` has beside them (portfolio, version ...)."""
    own = entry.model_fields
    common = {f: getattr(record, f) for f in event.model_fields if f not in own}
    return [event.model_construct(**{f: getattr(e, f) for f in own}, **common) for e in entries]


class PortfolioProject(Event):
    """One denormalised record per project (``pmo.reporting.projects.v1``, compacted, keyed by
    project): what a warehouse needs in one row. A withdrawn project keeps its last record with
    ``withdrawn: true``."""

    TYPE: ClassVar[str] = "pmo.reporting.project.v1"

    project_key: str
    portfolio: str
    source: str | None
    external_id: str | None
    name: str | None
    stage: str | None
    program: str | None
    sponsor: str | None
    mandatory: bool | None
    value: float | None
    cost: float | None
    currency: str | None
    risk: int | None
    withdrawn: bool | None
    revision: int | None
    score: float | None
    rank: int | None
    model: str | None
    model_version: int | None
    explanation: list[Contribution] | None
    plan_status: str | None
    start_month: str | None
    end_month: str | None
    deferral: Deferral | None
    ranking_version: int | None
    plan_version: int | None
