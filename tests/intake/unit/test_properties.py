"""Property: whatever bytes arrive, intake answers with a project or with reasons, never an
exception; and the order submissions arrive in does not change the final state."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.domain import Accepted, Refused, decide, parse_submission
from shared.contracts.inbound import ProjectSubmission
from tests.helpers import submission
from tests.intake.unit.test_handler import FakeUnitOfWork, handler, record

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    """Valid submissions with one field replaced by an arbitrary JSON value."""
    base = submission("PRJ-1")
    project_fields = sorted(base["project"])
    top_fields = sorted(k for k in base if k != "project")

    def mutate(field: str, value: Any) -> dict[str, Any]:
        message = json.loads(json.dumps(base))
        if field in project_fields:
            message["project"][field] = value
        else:
            message[field] = value
        return message

    return st.builds(mutate, st.sampled_from(project_fields + top_fields), json_values)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, _mutations()))
def test_any_json_value_becomes_a_submission_or_reasons(value: Any) -> None:
    raw = json.dumps(value).encode()
    result = parse_submission(raw, None)
    if isinstance(result, ProjectSubmission):
        decision = decide(result, None)
        assert isinstance(decision, Accepted | Refused)
    else:
        assert result, "a refusal always has at least one reason"
        assert all(r.code and r.message for r in result)


@given(st.binary(max_size=2000))
def test_any_bytes_become_a_submission_or_reasons(raw: bytes) -> None:
    result = parse_submission(raw, b"any/key/x")
    assert isinstance(result, ProjectSubmission) or (result and all(r.code for r in result))


stages = ["idea", "proposal", "on_hold", "active", "done"]


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(1, 6))), st.lists(st.integers(0, 4), max_size=4))
async def test_any_arrival_order_converges_on_the_in_order_state(
    order: list[int], duplicates: list[int]
) -> None:
    messages = [
        submission("PRJ-1", revision=r, stage=stages[r - 1], name=f"v{r}") for r in range(1, 6)
    ]
    in_order = FakeUnitOfWork()
    await handler(in_order).handle([record(m, i) for i, m in enumerate(messages)])

    shuffled = FakeUnitOfWork()
    arrivals = [messages[r - 1] for r in order] + [messages[d] for d in duplicates]
    for i, message in enumerate(arrivals):
        await handler(shuffled).handle([record(message, i)])
    final = shuffled.projects.rows["retail/jira/PRJ-1"]
    assert final == in_order.projects.rows["retail/jira/PRJ-1"]
    assert final.revision == 5
