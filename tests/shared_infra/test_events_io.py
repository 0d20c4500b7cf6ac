"""Decoding a topic that carries several event types: the model is chosen by ``ce_type``, and a
type the consumer does not know is a reason, not an exception."""

from __future__ import annotations

from shared.consumer_record import Record
from shared.contracts.events import ProjectScored, RankChange, RankingChanged
from shared.errors import Reason
from shared.events_io import decode_typed

MOVE = RankingChanged(
    portfolio="retail", ranking_version=3, ranks=[RankChange(project_key="retail/j/A", rank=2)]
)


def record(event_type: str | None, value: bytes) -> Record:
    headers = [("ce_id", b"e-1")] + ([("ce_type", event_type.encode())] if event_type else [])
    return Record("t", 0, 0, b"retail", value, tuple(headers), 0)


def test_the_model_is_chosen_by_ce_type() -> None:
    decoded = decode_typed(
        record(RankingChanged.TYPE, MOVE.model_dump_json().encode()), ProjectScored, RankingChanged
    )
    assert decoded == ("e-1", MOVE)


def test_an_unknown_or_missing_type_is_refused_with_a_reason() -> None:
    for event_type in ("pmo.scoring.something.v9", None):
        decoded = decode_typed(
            record(event_type, MOVE.model_dump_json().encode()), ProjectScored, RankingChanged
        )
        assert isinstance(decoded, list)
        assert [(r.code, r.path) for r in decoded] == [("unknown_event_type", "<headers>.ce_type")]
        assert RankingChanged.TYPE in decoded[0].message


def test_a_known_type_with_a_wrong_body_is_refused_by_its_model() -> None:
    decoded = decode_typed(record(RankingChanged.TYPE, b'{"portfolio": 1}'), RankingChanged)
    assert isinstance(decoded, list)
    assert all(isinstance(r, Reason) for r in decoded)
    assert {r.path for r in decoded} >= {"ranking_version", "ranks"}
