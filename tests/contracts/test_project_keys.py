"""A project's events name its portfolio twice, in the key (``portfolio/source/external id``)
and in the state; an event whose key or state is of another portfolio than the event's is
refused, so no consumer files one project under two portfolios."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.contracts.events import ProjectChanged, ProjectsChanged, ProjectState

NOW = datetime(2027, 1, 5, tzinfo=UTC)


def _change(key: str, state_portfolio: str = "retail") -> dict[str, Any]:
    state = ProjectState.model_validate(
        {
            "name": "A",
            "portfolio": state_portfolio,
            "source": "jira",
            "external_id": "A",
            "stage": "idea",
        }
    )
    return {
        "project_key": key,
        "revision": 1,
        "submission_id": "s-1",
        "occurred_at": NOW,
        "project": state,
    }


def test_an_event_of_its_own_portfolio_stands() -> None:
    one = ProjectChanged(portfolio="retail", **_change("retail/jira/A"))
    many = ProjectsChanged(portfolio="retail", changes=[one])
    assert ProjectsChanged.model_validate_json(many.model_dump_json()).projects() == [one]


@pytest.mark.parametrize(
    ("key", "state_portfolio"),
    [
        ("energy/jira/A", "retail"),  # the key is of another portfolio
        ("retailer/jira/A", "retail"),  # a prefix of the name is not the name
        ("retail/jira/A", "energy"),  # the state is of another portfolio
    ],
)
def test_an_event_naming_another_portfolio_is_refused(key: str, state_portfolio: str) -> None:
    change = _change(key, state_portfolio)
    with pytest.raises(ValidationError, match="is not of the portfolio retail"):
        ProjectChanged(portfolio="retail", **change)
    with pytest.raises(ValidationError, match="is not of the portfolio retail"):
        ProjectsChanged(portfolio="retail", changes=[change])
    as_json = ProjectsChanged.model_construct(
        portfolio="retail", changes=[ProjectChanged.model_construct(**change)]
    ).model_dump_json()
    with pytest.raises(ValidationError, match="is not of the portfolio retail"):
        ProjectsChanged.model_validate_json(as_json)
