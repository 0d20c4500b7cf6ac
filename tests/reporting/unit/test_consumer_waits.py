"""How long each consumer the services build waits for records: a submission's path (intake's
submissions, reporting's project changes) at the path's 20 ms batch timeout, intake's fetch wait
at 20 ms and reporting's at 10 ms, derived work (intake's duplicate search, scoring, capacity,
reporting's other topics) at ``DERIVED_WAIT_MS``, in every role intake and reporting run in."""

from __future__ import annotations

from typing import Any

import pytest

from services.capacity.app import build as build_capacity
from services.intake.app import build as build_intake
from services.intake.settings import IntakeSettings
from services.reporting.app import build as build_reporting
from services.reporting.settings import ReportingSettings
from services.scoring.app import build as build_scoring
from shared.runtime import ServiceRuntime
from shared.settings import DERIVED_WAIT_MS, ServiceSettings
from shared.topics import Topic

PATH_WAIT_MS = ServiceSettings.model_fields["fetch_max_wait_ms"].default
# Reporting's fetch of project changes, the path's second hop, is held for less (its settings).
PROJECTS_FETCH_WAIT_MS = ReportingSettings.model_fields["fetch_max_wait_ms"].default


def waits(runtime: ServiceRuntime) -> dict[frozenset[str], tuple[int, int]]:
    """Each consumer's topics -> (its batch timeout, its fetch wait), as subscribed."""
    found: dict[frozenset[str], tuple[int, int]] = {}
    for subscriber in runtime.broker.subscribers:
        consumer: Any = subscriber
        topics = frozenset(t.name for t in consumer.topics)
        found[topics] = (consumer.batch_timeout_ms, consumer._connection_args["fetch_max_wait_ms"])
    return found


def test_the_path_and_derived_work_wait_as_documented() -> None:
    assert PROJECTS_FETCH_WAIT_MS == 10 < PATH_WAIT_MS == 20 < DERIVED_WAIT_MS
    derived = (DERIVED_WAIT_MS, DERIVED_WAIT_MS)
    assert set(waits(build_scoring()).values()) == {derived}
    assert set(waits(build_capacity()).values()) == {derived}


@pytest.mark.parametrize("role", ["all", "submissions", "duplicates"])
def test_intake_waits_for_submissions_as_the_path_does(role: Any) -> None:
    consumers = waits(build_intake(IntakeSettings(role=role)))
    submissions = frozenset({Topic.SUBMISSIONS.value})
    projects = frozenset({Topic.PROJECTS.value})
    expected = {}
    if role != "duplicates":
        expected[submissions] = (PATH_WAIT_MS, PATH_WAIT_MS)
    if role != "submissions":
        expected[projects] = (DERIVED_WAIT_MS, DERIVED_WAIT_MS)
    assert consumers == expected


@pytest.mark.parametrize("role", ["all", "worker", "projects", "others"])
def test_reporting_waits_for_project_changes_as_the_path_does(role: Any) -> None:
    settings = ReportingSettings(api_token="t", role=role)  # type: ignore[call-arg]
    consumers = waits(build_reporting(settings))
    projects = [w for topics, w in consumers.items() if Topic.PROJECTS.value in topics]
    others = [w for topics, w in consumers.items() if Topic.PROJECTS.value not in topics]
    assert projects == ([] if role == "others" else [(PATH_WAIT_MS, PROJECTS_FETCH_WAIT_MS)])
    assert others == ([] if role == "projects" else [(DERIVED_WAIT_MS, DERIVED_WAIT_MS)])


def test_without_the_projects_lane_one_consumer_waits_as_the_path() -> None:
    settings = ReportingSettings(api_token="t", projects_lane=False)  # type: ignore[call-arg]
    assert list(waits(build_reporting(settings)).values()) == [
        (PATH_WAIT_MS, PROJECTS_FETCH_WAIT_MS)
    ]


def test_an_operator_sets_reportings_derived_wait() -> None:
    settings = ReportingSettings(api_token="t", derived_wait_ms=250, fetch_max_wait_ms=5)  # type: ignore[call-arg]
    consumers = waits(build_reporting(settings))
    assert sorted(consumers.values()) == [(20, 5), (250, 250)]
