"""Reporting's HTTP API (``/api/v1``), bearer-token protected."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.reporting.repository import ReadModelQueries
from services.reporting.settings import ReportingSettings

_bearer = HTTPBearer(auto_error=False)


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
    withdrawn: bool | None
    revision: int | None
    score: float | None
    rank: int | None
    explanation: list[Contribution] | None
    model: str | None
    model_version: int | None
    score_cause: str | None
    override: Override | None
    possible_duplicates: list[PossibleDuplicate]
    plan_status: str | None
    start_month: str | None
    end_month: str | None
    deferral: Deferral | None


class ProjectPage(BaseModel):
    portfolio: str
    total: int
    limit: int
    offset: int
    items: list[ProjectView]


class AuditEntry(BaseModel):
    command_id: str
    action: str
    author: str
    outcome: str
    detail: dict[str, Any]
    comment: str
    at: datetime


class AuditPage(BaseModel):
    portfolio: str
    total: int
    limit: int
    offset: int
    items: list[AuditEntry]


def api_router(settings: ReportingSettings, queries: Any) -> APIRouter:
    """``queries`` is called for the ``ReadModelQueries`` once the pool exists."""
    token = settings.api_token.get_secret_value()

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(authorised)])

    @router.get("/portfolios/{portfolio}/projects", response_model=ProjectPage)
    async def list_projects(
        portfolio: str,
        limit: Annotated[int, Query(ge=1)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> ProjectPage:
        """The portfolio's projects in rank order, each with its score, explanation and plan."""
        limit = min(limit, settings.max_page_size)
        q: ReadModelQueries = queries()
        total, items = await q.projects(portfolio, limit=limit, offset=offset)
        return ProjectPage(
            portfolio=portfolio,
            total=total,
            limit=limit,
            offset=offset,
            items=[ProjectView.model_validate(i) for i in items],
        )

    @router.get("/portfolios/{portfolio}/scoring/audit", response_model=AuditPage)
    async def scoring_audit(
        portfolio: str,
        limit: Annotated[int, Query(ge=1)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AuditPage:
        """Every change to the portfolio's scoring, newest first: who, what, why, outcome."""
        limit = min(limit, settings.max_page_size)
        q: ReadModelQueries = queries()
        total, items = await q.scoring_audit(portfolio, limit=limit, offset=offset)
        return AuditPage(
            portfolio=portfolio,
            total=total,
            limit=limit,
            offset=offset,
            items=[AuditEntry.model_validate(i) for i in items],
        )

    return router


def create_api(settings: ReportingSettings, queries: Any) -> FastAPI:
    app = FastAPI(
        title="pmo reporting API",
        version="1.0.0",
        description="Portfolio, ranking and plan of each portfolio, read from pmo's read model.",
    )
    app.include_router(api_router(settings, queries))
    return app
