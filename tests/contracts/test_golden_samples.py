"""Every published sample of every contract version still parses, and round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from shared.contracts.events import (
    PlansChanged,
    ProjectChanged,
    ProjectPlanned,
    ProjectsChanged,
    ProjectScored,
    RankingChanged,
    ScoresChanged,
)
from shared.contracts.inbound import ProjectSubmission, ResourceUpdate

SAMPLES = Path(__file__).parent / "samples"
MODELS: dict[str, type[BaseModel]] = {
    "submission.v1": ProjectSubmission,
    "resource.v1": ResourceUpdate,
    "project_changed.v1": ProjectChanged,
    "projects_changed.v1": ProjectsChanged,
    "project_scored.v1": ProjectScored,
    "scores_changed.v1": ScoresChanged,
    "project_planned.v1": ProjectPlanned,
    "plans_changed.v1": PlansChanged,
    "ranking_changed.v1": RankingChanged,
}


def _model(path: Path) -> type[BaseModel]:
    return MODELS[".".join(path.name.split(".")[:2])]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_sample_parses_and_round_trips(path: Path) -> None:
    model = _model(path)
    parsed = model.model_validate_json(path.read_bytes())
    again = model.model_validate_json(parsed.model_dump_json(by_alias=True))
    assert again == parsed


def test_every_contract_has_a_sample() -> None:
    covered = {".".join(p.name.split(".")[:2]) for p in SAMPLES.glob("*.json")}
    assert covered == set(MODELS)


def test_unknown_fields_are_tolerated() -> None:
    sample = json.loads((SAMPLES / "submission.v1.upsert.json").read_text())
    sample["added_later"] = {"anything": True}
    sample["project"]["also_new"] = 1
    assert ProjectSubmission.model_validate_json(json.dumps(sample)).external_id == "PRJ-42"


def test_inbound_types_are_strict() -> None:
    sample = json.loads((SAMPLES / "submission.v1.upsert.json").read_text())
    sample["project"]["value"] = "1200000"
    sample["project"]["risk"] = True
    with pytest.raises(ValidationError) as caught:
        ProjectSubmission.model_validate_json(json.dumps(sample))
    assert {e["loc"][-1] for e in caught.value.errors()} == {"value", "risk"}


def test_contracts_are_frozen() -> None:
    sub = ProjectSubmission.model_validate_json(
        (SAMPLES / "submission.v1.upsert.json").read_bytes()
    )
    with pytest.raises(Exception, match="frozen"):
        sub.revision = 9  # type: ignore[misc]
