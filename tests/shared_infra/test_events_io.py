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


def test_an_unknown_type_is_refused_with_a_reason() -> None:
    decoded = decode_typed(
        record("pmo.scoring.something.v9", MOVE.model_dump_json().encode()),
        ProjectScored,
        RankingChanged,
    )
    assert isinstance(decoded, list)
    assert [(r.code, r.path) for r in decoded] == [("unknown_event_type", "<headers>.ce_type")]
    assert RankingChanged.TYPE in decoded[0].message


def test_without_a_type_the_topics_first_type_is_read() -> None:
    """Producers of the topic's first type need not send ``ce_type``: such a record is read as
    that type, and refused by it when it is another."""
    assert decode_typed(record(None, MOVE.model_dump_json().encode()), RankingChanged) == (
        "e-1",
        MOVE,
    )
    refused = decode_typed(
        record(None, MOVE.model_dump_json().encode()), ProjectScored, RankingChanged
    )
    assert isinstance(refused, list)
    assert "project_key" in {r.path for r in refused}


def test_a_known_type_with_a_wrong_body_is_refused_by_its_model() -> None:
    decoded = decode_typed(record(RankingChanged.TYPE, b'{"portfolio": 1}'), RankingChanged)
    assert isinstance(decoded, list)
    assert all(isinstance(r, Reason) for r in decoded)
    assert {r.path for r in decoded} >= {"ranking_version", "ranks"}
