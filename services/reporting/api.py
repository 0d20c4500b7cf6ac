"""Reporting's HTTP API (``/api/v1``): the portfolio, ranking with explanations, capacity,
conflicts, skill gaps, deferred projects, funnel, programs and scoring audit — each as JSON or
CSV, paginated with a capped page size, and ``as_of`` any past instant. What-if scenarios are
requested here too (admin scope) and answered by the capacity service.

The project lists are rendered once per change of their portfolio and answered from memory
while one indexed read says nothing has changed since (``PageCache``), with an entity tag for
conditional requests."""

import asyncio
import csv
import hashlib
import inspect
import io
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, model_validator

from services.reporting.auth import ADMIN, READ, Principal, TokenBook
from services.reporting.funding import (
    Rule,
    Unfunded,
    currencies,
    currencies_other_than,
    funding_line,
)
from services.reporting.reach import HistoryReach, Instant, query_error, swept
from services.reporting.repository import ProjectFilter, ReadModelQueries
from services.reporting.settings import ReportingSettings
from services.reporting.waits import MAX_WAIT_SECONDS, ProjectWaits
from shared.contracts.capacity import BUDGET, Scenario

_bearer = HTTPBearer(auto_error=False)
Format = Literal["json", "csv"]


class Contribution(BaseModel):
    criterion: str
    raw: float | None
    normalised: float
    weight: float
    contribution: float


class Deferral(BaseModel):
    code: str
    detail: str
    role: str | None = None
    month: str | None = None
    shortfall_fte: float | None = None


class Override(BaseModel):
    kind: str
    justification: str
    author: str
    rank: int | None = None
    delta: float | None = None


class PossibleDuplicate(BaseModel):
    project_key: str
    external_id: str
    name: str
    similarity: float


class ProjectView(BaseModel):
    project_key: str
    source: str | None
    external_id: str | None
    name: str | None
    stage: str | None
    program: str | None
    sponsor: str | None
    value: float | None
    cost: float | None
    currency: str | None
    mandatory: bool | None
    risk: int | None
    withdrawn: bool | None
    revision: int | None
    score: float | None
    rank: int | None
    explanation: list[Contribution] | None
    model: str | None
    model_version: int | None
    score_cause: str | None
    override: Override | None
    possible_duplicates: list[PossibleDuplicate] | None
    plan_status: str | None
    start_month: str | None
    end_month: str | None
    deferral: Deferral | None
    updated_at: datetime | None


class Page(BaseModel):
    portfolio: str
    as_of: datetime | None = None
    total: int
    limit: int
    offset: int


class ProjectPage(Page):
    items: list[ProjectView]


class CapacityCell(BaseModel):
    role: str
    month: str
    capacity: float
    demand: float
    utilisation: float | None


class Conflict(BaseModel):
    role: str
    month: str
    demand: float
    capacity: float
    projects: list[str]
    suggestion: str


class SkillGap(BaseModel):
    role: str
    month: str
    demand: float
    capacity: float
    gap: float
    uncovered: bool


class PlanView(BaseModel):
    portfolio: str
    as_of: datetime | None = None
    plan_version: int | None
    horizon_start: str | None
    horizon_months: int | None


class CapacityView(PlanView):
    items: list[CapacityCell]


class ConflictsView(PlanView):
    items: list[Conflict]


class SkillGapsView(PlanView):
    items: list[SkillGap]


class FunnelStage(BaseModel):
    stage: str
    projects: int
    value: float | None
    cost: float | None


class FunnelView(BaseModel):
    portfolio: str
    as_of: datetime | None = None
    stages: list[FunnelStage]
    rejected_submissions: int


class ProgramRow(BaseModel):
    program: str
    projects: int
    value: float | None
    cost: float | None
    average_score: float | None
    planned: int
    deferred: int
    first_start: str | None
    last_end: str | None


class ProgramsView(BaseModel):
    portfolio: str
    as_of: datetime | None = None
    items: list[ProgramRow]


class Movement(BaseModel):
    """A project that differs between two instants: its values at each, and which changed."""

    project_key: str
    source: str | None
    external_id: str | None
    name: str | None
    change: Literal["added", "withdrawn", "reinstated", "changed", "removed"]
    changed: list[str] = Field(description="The compared fields whose values differ.")
    rank_gained: int | None = Field(description="Places moved up (negative: down).")
    rank_before: int | None
    rank_after: int | None
    score_before: float | None
    score_after: float | None
    stage_before: str | None
    stage_after: str | None
    plan_status_before: str | None
    plan_status_after: str | None
    start_month_before: str | None
    start_month_after: str | None
    end_month_before: str | None
    end_month_after: str | None
    value_before: float | None
    value_after: float | None
    cost_before: float | None
    cost_after: float | None
    withdrawn_before: bool | None
    withdrawn_after: bool | None


class MovementPage(Page):
    since: datetime
    until: datetime = Field(description="The later instant: the one asked for, or when read.")
    items: list[Movement]


class FundedProject(BaseModel):
    rank: int
    project_key: str
    source: str | None
    external_id: str | None
    name: str | None
    stage: str | None
    mandatory: bool | None
    score: float | None
    value: float | None
    cost: float | None
    currency: str | None
    plan_status: str | None
    cumulative_cost: float = Field(
        description="The cost funded from rank 1 down to this project, itself included when funded."
    )
    funded: bool
    reason: Unfunded | None = Field(
        description="Why not funded: below_line (under a project that did not fit, rule line),"
        " over_budget (its cost does not fit what is left), cost_unknown."
    )


class FundingShare(BaseModel):
    projects: int
    cost: float = Field(description="Their known cost.")
    value: float


class FundingPage(Page):
    budget: float
    currency: str | None = Field(description="The budget's: the one named, or the ranking's own.")
    rule: Rule
    funded: FundingShare
    unfunded: FundingShare
    remaining: float = Field(description="What is left of the budget after what is funded.")
    last_funded_rank: int | None = Field(description="The line: the lowest-ranked project funded.")
    first_unfunded_rank: int | None = Field(
        description="The first project by rank whose cost did not fit (over_budget)."
    )
    cost_unknown: int = Field(description="Ranked projects with no cost, never funded.")
    mandatory_unfunded: int = Field(description="Mandatory projects the budget does not reach.")
    items: list[FundedProject]


class AuditEntry(BaseModel):
    command_id: str
    action: str
    author: str
    outcome: str
    detail: dict[str, Any]
    comment: str
    at: datetime


class AuditPage(Page):
    items: list[AuditEntry]


class PortfolioSummary(BaseModel):
    portfolio: str
    projects: int
    updated_at: datetime | None


class HistoryKept(BaseModel):
    """How far back ``as_of`` reaches."""

    retention_days: int | None = Field(
        description="The history's retention window; null keeps everything from now on."
    )
    kept_from: datetime | None = Field(
        description="The earliest instant an as_of may name: the window's start or the latest"
        " cutoff a sweep recorded, whichever is later; null when the whole history is kept."
    )


class ScenarioRequest(BaseModel):
    """A what-if scenario, or ``optimise`` to compare the plan with the exact optimum."""

    scenario: Scenario | None = None
    optimise: bool = False
    objective: Literal["score", "value"] = "score"
    time_limit_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    budget: Annotated[float, Field(ge=0, le=1e15, description=BUDGET)] | None = None

    @model_validator(mode="after")
    def _one_question(self) -> "ScenarioRequest":
        # A model rule, so the 422 has the documented shape (a list of errors), not a string.
        if (self.scenario is None) == (not self.optimise):
            raise ValueError("give either a scenario or optimise: true")
        if self.budget is not None and not self.optimise:
            raise ValueError("a budget is for optimise: true")
        return self


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class ScenarioStatus(BaseModel):
    request_id: str
    status: Literal["pending", "done"]
    result: dict[str, Any] | None = None


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """Flat rows as CSV; nested values as JSON text."""
    out = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        )
    return out.getvalue()


CSV = "text/csv; charset=utf-8"
JSON = "application/json"
# Rendered project pages kept per process (about 100 KB for a default page of 100).
PAGE_CACHE_BYTES = 64 * 2**20
_ETAG = {
    "ETag": {
        "description": "The page's entity tag, for If-None-Match",
        "schema": {"type": "string"},
    }
}
# The project lists answer conditional requests: 304 while the page a client holds is current.
VALIDATED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "headers": _ETAG},
    304: {"description": "Not modified: the page If-None-Match names is current", "headers": _ETAG},
}


def _csv(rows: list[dict[str, Any]]) -> Response:
    return Response(_csv_text(rows), media_type=CSV)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response body as sent, with its entity tag."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> "Rendered":
        return cls(body, media_type, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')


class PageCache:
    """Rendered pages, each kept with the validator it was read under (see
    ``ReadModelQueries.projects_version``): a page is sent again only while the validator
    read for the request still equals it, so a change committed by any process is seen by
    the next request. Concurrent misses of one page and validator render it once. Least
    recently used pages go first once the bodies pass ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        self._pages: OrderedDict[Hashable, tuple[str, Rendered]] = OrderedDict()
        self._rendering: dict[tuple[Hashable, str], asyncio.Task[Rendered]] = {}

    async def get(
        self, key: Hashable, version: str, render: Callable[[], Awaitable[Rendered]]
    ) -> Rendered:
        found = self._pages.get(key)
        if found is not None and found[0] == version:
            self._pages.move_to_end(key)
            return found[1]
        task = self._rendering.get((key, version))
        if task is None:
            task = asyncio.ensure_future(render())
            task.add_done_callback(_consume)
            self._rendering[key, version] = task
            task.add_done_callback(lambda done: self._rendered(key, version, done))
        # A client that goes away does not cancel the rendering the others wait for.
        return await asyncio.shield(task)

    def _rendered(self, key: Hashable, version: str, task: asyncio.Task[Rendered]) -> None:
        del self._rendering[key, version]
        if task.cancelled() or task.exception() is not None:
            return  # the requests waiting on it get the exception; nothing is kept
        page = task.result()
        previous = self._pages.pop(key, None)
        if previous is not None:
            self._size -= len(previous[1].body)
        if len(page.body) > self._budget:
            return
        self._pages[key] = (version, page)
        self._size += len(page.body)
        while self._size > self._budget:
            _, (_, evicted) = self._pages.popitem(last=False)
            self._size -= len(evicted.body)


class SharedReads:
    """One read at a time per key, shared by the requests that arrive while it has not begun.

    A read answers only requests that arrived before it began, so each still sees every change
    committed before it arrived; under load most requests share a read instead of each making
    its own round trip to the database."""

    def __init__(self, read: Callable[[str], Awaitable[str]]) -> None:
        self._read = read
        self._waiting: dict[str, asyncio.Task[str]] = {}  # not begun: new requests join it
        self._reading: dict[str, asyncio.Task[str]] = {}  # begun: new requests wait for the next

    async def get(self, key: str) -> str:
        task = self._waiting.get(key)
        if task is None or task.done():  # done before it began: cancelled with the loop
            task = asyncio.ensure_future(self._next(key, self._reading.get(key)))
            task.add_done_callback(_consume)
            self._waiting[key] = task
        return await asyncio.shield(task)

    async def _next(self, key: str, before: asyncio.Task[str] | None) -> str:
        if before is not None:
            await asyncio.wait([before])
        me = self._waiting.pop(key)
        self._reading[key] = me
        try:
            return await self._read(key)
        finally:
            if self._reading.get(key) is me:
                del self._reading[key]


def _consume(task: asyncio.Task[Any]) -> None:
    """Its outcome is its waiters'; when they have all gone, it is dropped without a warning."""
    if not task.cancelled():
        task.exception()


def _matches(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def _send(request: Request, page: Rendered) -> Response:
    # no-cache: a client may keep the page but asks again, and gets a 304 while it is current.
    headers = {"ETag": page.etag, "Cache-Control": "private, no-cache", "Vary": "Accept"}
    if _matches(request, page.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(page.body, media_type=page.media_type, headers=headers)


def _wants_csv(request: Request, fmt: Format | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


def refuse_nul(request: Request) -> None:
    """A 422 for a NUL character in the path or the query: no stored value can hold one
    (Postgres text cannot), and the database would refuse the query with an error."""
    errors = [
        {"type": "string_nul", "loc": [where, name], "msg": "NUL characters are not allowed"}
        for where, items in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in items
        if "\x00" in str(value)
    ]
    if errors:
        raise RequestValidationError(errors)


SubmitScenario = Callable[[str, dict[str, Any], str], Awaitable[None]]


def api_router(
    settings: ReportingSettings,
    queries: Callable[[], ReadModelQueries],
    submit: SubmitScenario | None = None,
    waits: ProjectWaits | None = None,
) -> APIRouter:
    """``queries`` gives the read model once the pool exists; ``submit`` publishes a capacity
    request (portfolio, request body, author) through reporting's outbox; ``waits`` holds the
    requests waiting for a project's revision (one for the process's pool by default)."""
    tokens = TokenBook(settings.api_token.get_secret_value(), settings.api_tokens)
    waits = waits or ProjectWaits(lambda: queries().pool)

    def authenticate(credentials: HTTPAuthorizationCredentials | None) -> Principal:
        found = tokens.find(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    # Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a thread
    # hop per dependency per request.
    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return authenticate(credentials)

    class AuthenticatedRoute(APIRoute):
        """Authentication before anything else reads the request. FastAPI decodes a JSON body
        before it solves dependencies, so a malformed body would otherwise get a 422 (and its
        parser's message) before a missing token got its 401.

        Every route documents the refusals it can give (401, 403, and 404 for a portfolio the
        token may not see) and, where ``format`` is a parameter, its CSV answer."""

        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            responses: dict[int | str, dict[str, Any]] = {
                401: {"model": Problem, "description": "No valid bearer token"},
                403: {"model": Problem, "description": "The token lacks a scope"},
            }
            if "{portfolio}" in path:
                responses[404] = {
                    "model": Problem,
                    "description": "No such portfolio, or not one this token may see",
                }
            if "fmt" in inspect.signature(endpoint).parameters:
                responses[200] = {"content": {"text/csv": {"schema": {"type": "string"}}}}
            kwargs["responses"] = responses | (kwargs.get("responses") or {})
            super().__init__(path, endpoint, **kwargs)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def authenticated(request: Request) -> Response:
                authenticate(await _bearer(request))
                refuse_nul(request)
                return await handler(request)

            return authenticated

    async def any_reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if READ not in who.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token lacks the read scope")
        return who

    async def reader(portfolio: str, who: Annotated[Principal, Depends(any_reader)]) -> Principal:
        if not who.can_see(portfolio):
            # Not 403: a token scoped to other portfolios learns nothing about this one.
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such portfolio")
        return who

    async def admin(portfolio: str, who: Annotated[Principal, Depends(reader)]) -> Principal:
        if ADMIN not in who.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token lacks the admin scope")
        return who

    Reader = Annotated[Principal, Depends(reader)]
    Limit = Annotated[int, Query(ge=1, description="Page size; capped by the server.")]
    # Postgres's OFFSET is a bigint: anything larger is refused here, not by the database.
    Offset = Annotated[int, Query(ge=0, le=2**63 - 1)]

    reach = HistoryReach(settings, queries)
    AsOf = Annotated[datetime | None, Depends(reach)]
    Fmt = Annotated[Format | None, Query(alias="format", description="json (default) or csv")]
    router = APIRouter(prefix="/api/v1", route_class=AuthenticatedRoute)

    def capped(limit: int) -> int:
        return min(limit, settings.max_page_size)

    @router.get("/portfolios", response_model=list[PortfolioSummary])
    async def list_portfolios(
        who: Annotated[Principal, Depends(any_reader)],
    ) -> list[PortfolioSummary]:
        """The portfolios this token may read."""
        rows = await queries().portfolios()
        return [PortfolioSummary.model_validate(r) for r in rows if who.can_see(r["portfolio"])]

    @router.get("/history", response_model=HistoryKept)
    async def history(_: Annotated[Principal, Depends(any_reader)]) -> HistoryKept:
        """How far back the history reaches: the earliest instant an ``as_of`` may name."""
        kept_from = await reach.earliest()
        return HistoryKept(
            retention_days=settings.history_retention_days,
            kept_from=kept_from,
        )

    pages = PageCache(PAGE_CACHE_BYTES)
    versions = SharedReads(lambda portfolio: queries().projects_version(portfolio))

    async def _projects(
        request: Request,
        portfolio: str,
        limit: int,
        offset: int,
        as_of: datetime | None,
        fmt: Format | None,
        filters: ProjectFilter,
    ) -> Response:
        """A page of projects as JSON or CSV, rendered once per change of the portfolio."""
        csv_wanted = _wants_csv(request, fmt)
        size = capped(limit)

        async def render() -> Rendered:
            total, items = await queries().projects(
                portfolio, limit=size, offset=offset, as_of=as_of, filters=filters
            )
            if csv_wanted:
                return Rendered.of(_csv_text(items).encode(), CSV)
            page = ProjectPage(
                portfolio=portfolio,
                as_of=as_of,
                total=total,
                limit=size,
                offset=offset,
                items=[ProjectView.model_validate(i) for i in items],
            )
            return Rendered.of(page.model_dump_json().encode(), JSON)

        if as_of is not None:
            # The history has no validator: it is read each time.
            return _send(request, await render())
        # The validator first, then the rows (see projects_version).
        version = await versions.get(portfolio)
        key = (portfolio, filters, size, offset, csv_wanted)
        return _send(request, await pages.get(key, version, render))

    @router.get("/portfolios/{portfolio}/projects", response_model=ProjectPage, responses=VALIDATED)
    async def list_projects(
        request: Request,
        portfolio: str,
        _: Reader,
        limit: Limit = 100,
        offset: Offset = 0,
        as_of: AsOf = None,
        fmt: Fmt = None,
        stage: str | None = None,
        program: str | None = None,
        plan_status: str | None = None,
        mandatory: bool | None = None,
        include_withdrawn: bool = False,
    ) -> Response:
        """The portfolio's projects in rank order: stage, score and explanation, plan."""
        filters = ProjectFilter(
            stage=stage,
            program=program,
            plan_status=plan_status,
            mandatory=mandatory,
            include_withdrawn=include_withdrawn,
        )
        return await _projects(request, portfolio, limit, offset, as_of, fmt, filters)

    @router.get("/portfolios/{portfolio}/ranking", response_model=ProjectPage, responses=VALIDATED)
    async def ranking(
        request: Request,
        portfolio: str,
        _: Reader,
        limit: Limit = 100,
        offset: Offset = 0,
        as_of: AsOf = None,
        fmt: Fmt = None,
    ) -> Response:
        """Ranked projects only, rank 1 first, each with its explanation and any override."""
        filters = ProjectFilter(ranked_only=True)
        return await _projects(request, portfolio, limit, offset, as_of, fmt, filters)

    @router.get("/portfolios/{portfolio}/deferred", response_model=ProjectPage, responses=VALIDATED)
    async def deferred(
        request: Request,
        portfolio: str,
        _: Reader,
        limit: Limit = 100,
        offset: Offset = 0,
        as_of: AsOf = None,
        fmt: Fmt = None,
    ) -> Response:
        """Projects the plan could not place, each with the reason."""
        filters = ProjectFilter(plan_status="deferred")
        return await _projects(request, portfolio, limit, offset, as_of, fmt, filters)

    @router.get(
        "/portfolios/{portfolio}/projects/{source}/{external_id}", response_model=ProjectView
    )
    async def one_project(
        portfolio: str,
        source: str,
        external_id: str,
        _: Reader,
        as_of: AsOf = None,
        min_revision: Annotated[
            int | None,
            Query(
                ge=1,
                le=2**31 - 1,
                description="With wait: answer once the project has this revision or a later one.",
            ),
        ] = None,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_WAIT_SECONDS,
                description=(
                    "Seconds to wait for min_revision. The answer is the project as it is when"
                    " the revision arrives or the time runs out (404 if it does not exist by"
                    " then); its revision says which."
                ),
            ),
        ] = 0.0,
    ) -> ProjectView:
        """One project, with its score, explanation, rank and plan. With ``min_revision`` and
        ``wait``, a long poll: the answer comes when the read model has that revision (as an
        upstream system that has just submitted it wants), or when ``wait`` runs out."""
        if as_of is not None and min_revision is not None:
            raise query_error(
                "min_revision", "min_revision waits for the project as it is now: not with as_of"
            )
        key = f"{portfolio}/{source}/{external_id}"
        row = await queries().project(key, as_of)
        if min_revision is not None and wait > 0 and _older(row, min_revision):
            try:
                async with asyncio.timeout(wait):
                    row = await waits.until(key, min_revision)
            except TimeoutError:
                row = await queries().project(key)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such project")
        return ProjectView.model_validate(row)

    async def _summary(portfolio: str, as_of: datetime | None) -> dict[str, Any]:
        found = await queries().summary(portfolio, as_of)
        return found or {
            "plan_version": None,
            "horizon_start": None,
            "horizon_months": None,
            "utilisation": [],
            "conflicts": [],
            "skill_gaps": [],
        }

    def _plan_fields(portfolio: str, as_of: datetime | None, s: dict[str, Any]) -> dict[str, Any]:
        return {
            "portfolio": portfolio,
            "as_of": as_of,
            "plan_version": s["plan_version"],
            "horizon_start": s["horizon_start"],
            "horizon_months": s["horizon_months"],
        }

    @router.get("/portfolios/{portfolio}/capacity", response_model=CapacityView)
    async def capacity_view(
        request: Request,
        portfolio: str,
        _: Reader,
        as_of: AsOf = None,
        fmt: Fmt = None,
        role: str | None = None,
    ) -> CapacityView | Response:
        """Capacity, demand and utilisation by role and month (the heat map)."""
        s = await _summary(portfolio, as_of)
        cells = [
            {**c, "utilisation": c["demand"] / c["capacity"] if c["capacity"] > 0 else None}
            for c in s["utilisation"]
            if role is None or c["role"] == role
        ]
        if _wants_csv(request, fmt):
            return _csv(cells)
        return CapacityView(**_plan_fields(portfolio, as_of, s), items=cells)

    @router.get("/portfolios/{portfolio}/conflicts", response_model=ConflictsView)
    async def conflicts_view(
        request: Request, portfolio: str, _: Reader, as_of: AsOf = None, fmt: Fmt = None
    ) -> ConflictsView | Response:
        """Committed work over capacity, with the projects causing it and a way out."""
        s = await _summary(portfolio, as_of)
        if _wants_csv(request, fmt):
            return _csv(s["conflicts"])
        return ConflictsView(**_plan_fields(portfolio, as_of, s), items=s["conflicts"])

    @router.get("/portfolios/{portfolio}/skill-gaps", response_model=SkillGapsView)
    async def skill_gaps_view(
        request: Request, portfolio: str, _: Reader, as_of: AsOf = None, fmt: Fmt = None
    ) -> SkillGapsView | Response:
        """Demand no capacity covers, by role and month: the FTE to hire or borrow."""
        s = await _summary(portfolio, as_of)
        if _wants_csv(request, fmt):
            return _csv(s["skill_gaps"])
        return SkillGapsView(**_plan_fields(portfolio, as_of, s), items=s["skill_gaps"])

    @router.get("/portfolios/{portfolio}/funnel", response_model=FunnelView)
    async def funnel(
        request: Request, portfolio: str, _: Reader, as_of: AsOf = None, fmt: Fmt = None
    ) -> FunnelView | Response:
        """Projects by stage, and submissions refused at intake."""
        found = await queries().funnel(portfolio, as_of)
        if _wants_csv(request, fmt):
            return _csv(found["stages"])
        return FunnelView(portfolio=portfolio, as_of=as_of, **found)

    @router.get("/portfolios/{portfolio}/programs", response_model=ProgramsView)
    async def programs(
        request: Request, portfolio: str, _: Reader, as_of: AsOf = None, fmt: Fmt = None
    ) -> ProgramsView | Response:
        """Projects rolled up by program."""
        rows = await queries().programs(portfolio, as_of)
        if _wants_csv(request, fmt):
            return _csv(rows)
        return ProgramsView(
            portfolio=portfolio, as_of=as_of, items=[ProgramRow.model_validate(r) for r in rows]
        )

    @router.get("/portfolios/{portfolio}/movement", response_model=MovementPage)
    async def movement(
        request: Request,
        portfolio: str,
        _: Reader,
        since: Annotated[
            Instant,
            Query(description="The earlier instant (UTC without an offset), in the kept history."),
        ],
        until: Annotated[
            Instant | None,
            Query(description="The later instant (UTC without an offset); now when omitted."),
        ] = None,
        limit: Limit = 100,
        offset: Offset = 0,
        fmt: Fmt = None,
    ) -> MovementPage | Response:
        """What changed in the portfolio between two instants: each project added, withdrawn,
        reinstated or changed in rank, score, stage, plan or money, with its values at both,
        in the later instant's rank order (for a steering committee: since the last one)."""
        reach.check(since, "since")
        if until is not None and until < since:
            raise query_error("until", "until must be at or after since")
        try:
            total, until, items = await queries().movement(
                portfolio, since=since, until=until, limit=capped(limit), offset=offset
            )
        except asyncpg.PostgresError as exc:
            # Before a sweep's cutoff: since, not after until, is.
            if (refusal := swept(exc, "since")) is not None:
                raise refusal from None
            raise
        if _wants_csv(request, fmt):
            return _csv(items)
        return MovementPage(
            portfolio=portfolio,
            since=since,
            until=until,
            total=total,
            limit=capped(limit),
            offset=offset,
            items=[Movement.model_validate(i) for i in items],
        )

    @router.get("/portfolios/{portfolio}/funding", response_model=FundingPage, responses=VALIDATED)
    async def funding(
        request: Request,
        portfolio: str,
        _: Reader,
        budget: Annotated[
            float,
            Query(ge=0, le=1e15, description="The money to fund the ranking with, from rank 1."),
        ],
        currency: Annotated[
            str | None,
            Query(
                pattern=r"^[A-Z]{3}$",
                description="The budget's currency (ISO 4217); the ranking's own when omitted.",
            ),
        ] = None,
        rule: Annotated[
            Rule,
            Query(
                description="line (default): funded down to the first project that does not"
                " fit; fill: each project that fits what is left, in rank order."
            ),
        ] = "line",
        limit: Limit = 100,
        offset: Offset = 0,
        as_of: AsOf = None,
        fmt: Fmt = None,
    ) -> Response:
        """How far down the ranking a budget reaches: each ranked project with the cost funded
        down to it and whether it is funded, the totals on each side of the line, and the
        mandatory projects left out. A project with no currency counts in the budget's; a
        ranking with projects in another currency is refused (422)."""
        csv_wanted = _wants_csv(request, fmt)
        size = capped(limit)

        async def render() -> Rendered:
            rows = await queries().funding_rows(portfolio, as_of)
            if other := currencies_other_than(rows, currency):
                raise query_error(
                    "currency",
                    f"the ranking has projects in {', '.join(other)}: a funding line compares"
                    " costs in one currency (name it with currency when the ranking has one)",
                )
            line = funding_line(rows, budget, rule)
            items = line.items[offset : offset + size]
            if csv_wanted:
                return Rendered.of(_csv_text(items).encode(), CSV)
            found = currencies(rows)
            page = FundingPage(
                portfolio=portfolio,
                as_of=as_of,
                total=len(line.items),
                limit=size,
                offset=offset,
                budget=budget,
                currency=currency or (found[0] if found else None),
                rule=rule,
                funded=FundingShare.model_validate(line.funded, from_attributes=True),
                unfunded=FundingShare.model_validate(line.unfunded, from_attributes=True),
                remaining=line.remaining,
                last_funded_rank=line.last_funded_rank,
                first_unfunded_rank=line.first_unfunded_rank,
                cost_unknown=line.cost_unknown,
                mandatory_unfunded=line.mandatory_unfunded,
                items=[FundedProject.model_validate(i) for i in items],
            )
            return Rendered.of(page.model_dump_json().encode(), JSON)

        if as_of is not None:
            return _send(request, await render())
        version = await versions.get(portfolio)
        key = ("funding", portfolio, budget, currency, rule, size, offset, csv_wanted)
        return _send(request, await pages.get(key, version, render))

    @router.get("/portfolios/{portfolio}/scoring/audit", response_model=AuditPage)
    async def scoring_audit(
        request: Request,
        portfolio: str,
        _: Reader,
        limit: Limit = 100,
        offset: Offset = 0,
        fmt: Fmt = None,
    ) -> AuditPage | Response:
        """Every change to the portfolio's scoring, newest first: who, what, why, outcome."""
        total, items = await queries().scoring_audit(portfolio, limit=capped(limit), offset=offset)
        if _wants_csv(request, fmt):
            return _csv(items)
        return AuditPage(
            portfolio=portfolio,
            total=total,
            limit=capped(limit),
            offset=offset,
            items=[AuditEntry.model_validate(i) for i in items],
        )

    @router.post(
        "/portfolios/{portfolio}/scenarios",
        response_model=ScenarioStatus,
        status_code=status.HTTP_202_ACCEPTED,
    )
    async def request_scenario(
        portfolio: str, body: ScenarioRequest, who: Annotated[Principal, Depends(admin)]
    ) -> ScenarioStatus:
        """Ask capacity to evaluate a what-if scenario, or to optimise; poll the result."""
        if submit is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "scenarios unavailable")
        request_id = str(uuid.uuid4())
        message: dict[str, Any] = {
            "request_id": request_id,
            "portfolio": portfolio,
            "author": who.name,
            "issued_at": datetime.now(UTC).isoformat(),
        }
        if body.optimise:
            message.update(
                action="optimise",
                objective=body.objective,
                time_limit_seconds=body.time_limit_seconds,
                budget=body.budget,
            )
        else:
            assert body.scenario is not None
            message.update(action="whatif", scenario=body.scenario.model_dump(by_alias=True))
        await submit(portfolio, message, who.name)
        return ScenarioStatus(request_id=request_id, status="pending")

    @router.get(
        "/portfolios/{portfolio}/scenarios/{request_id}",
        response_model=ScenarioStatus,
        responses={202: {"model": ScenarioStatus}},
    )
    async def scenario_result(
        portfolio: str, request_id: str, response: Response, _: Reader
    ) -> ScenarioStatus:
        found = await queries().scenario(portfolio, request_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such request")
        if found["result"] is None:
            response.status_code = status.HTTP_202_ACCEPTED
            return ScenarioStatus(request_id=request_id, status="pending")
        return ScenarioStatus(request_id=request_id, status="done", result=found["result"])

    @router.get("/portfolios/{portfolio}/changes", include_in_schema=False)
    async def changes(portfolio: str, _: Reader) -> dict[str, str]:
        """A marker that changes whenever the portfolio does (polled by the dashboard)."""
        return {"marker": await queries().change_marker(portfolio)}

    return router


def _older(row: dict[str, Any] | None, revision: int) -> bool:
    """Whether ``row`` (a project, or None for none) is older than ``revision``."""
    return row is None or row["revision"] < revision


def create_api(
    settings: ReportingSettings,
    queries: Callable[[], ReadModelQueries],
    submit: SubmitScenario | None = None,
    waits: ProjectWaits | None = None,
) -> FastAPI:
    app = FastAPI(
        title="pmo reporting API",
        version="1.0.0",
        description=(
            "The portfolio, its ranking with explanations, capacity, conflicts, skill gaps, "
            "deferred projects, funnel and programs, from pmo's read model — as JSON or CSV, "
            "at any past instant (as_of). Bearer tokens carry scopes (read, admin) and may be "
            "limited to some portfolios."
        ),
    )
    app.include_router(api_router(settings, queries, submit, waits))

    @app.exception_handler(asyncpg.PostgresError)
    async def history_swept(request: Request, exc: asyncpg.PostgresError) -> Response:
        """A read of an ``as_of`` before a sweep's recorded cutoff (``reach.SWEPT``) gets a 422
        naming the cutoff; any other database error stays a 500."""
        if (refusal := swept(exc, "as_of")) is None:
            raise exc
        return await request_validation_exception_handler(request, refusal)

    return app
