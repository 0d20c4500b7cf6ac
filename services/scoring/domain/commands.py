"""What analysts' commands may do. Pure."""

from __future__ import annotations

from services.scoring.domain.ahp import MAX_CR, priorities
from shared.contracts.scoring import AhpModel, ModelEnvelope
from shared.errors import Reason


def check_model(envelope: ModelEnvelope) -> list[Reason]:
    """Why a model cannot be used, if it cannot. An AHP model whose consistency ratio exceeds
    0.10 is refused with the ratio and the judgement furthest from what the weights imply."""
    model = envelope.model
    if not isinstance(model, AhpModel):
        return []
    result = priorities(model.matrix())
    if result.consistent:
        return []
    detail = ""
    if result.worst is not None:
        i, j, judged, implied = result.worst
        a, b = model.criteria[i], model.criteria[j]
        detail = (
            f"; the most inconsistent comparison is {a} vs {b}: judged {judged:.3g}, "
            f"while the other judgements imply {implied:.3g}"
        )
    return [
        Reason(
            "ahp_inconsistent",
            f"consistency ratio {result.cr:.3f} exceeds {MAX_CR:.2f}{detail}",
            "model.model.comparisons",
        )
    ]
