"""``pmo import``: turn a CSV or JSON-lines file into submissions and publish them to the inbound
topic exactly as an upstream system would. Rows that cannot even be turned into a submission are
reported with their line number; everything else is intake's to validate."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_NAMESPACE = uuid.UUID("0d4b7d0c-5a8f-4f0e-9a55-5d6c3a2b1e0f")

# CSV columns that are not plain project fields.
_NUMBER = {"value", "cost", "risk"}
_WSJF = ("business_value", "time_criticality", "risk_reduction", "job_size")


class RowError(ValueError):
    """A row that cannot be turned into a submission."""


@dataclass(slots=True)
class ImportResult:
    """(line, key, submission) of the rows that became submissions; (line, reason) of those
    that could not."""

    submissions: list[tuple[int, bytes, dict[str, Any]]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _number(text: str, column: str) -> float | int:
    try:
        value = float(text)
    except ValueError as exc:
        raise RowError(f"{column}: {text!r} is not a number") from exc
    return int(value) if value.is_integer() else value


def _pairs(text: str, column: str) -> dict[str, float | int]:
    """``growth:4;efficiency:2`` → ``{"growth": 4, "efficiency": 2}``."""
    out: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, number = part.partition(":")
        if not sep:
            raise RowError(f"{column}: {part!r} is not name:number")
        out[name.strip()] = _number(number.strip(), column)
    return out


def _demand(text: str) -> list[dict[str, Any]]:
    """``backend:2:0:6;qa:1:4:2`` → role, fte, start_month, months per line."""
    lines = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = part.split(":")
        if len(fields) != 4:
            raise RowError(f"demand: {part!r} is not role:fte:start_month:months")
        role, fte, start, months = fields
        lines.append(
            {
                "role": role.strip(),
                "fte": _number(fte, "demand"),
                "start_month": _number(start, "demand"),
                "months": _number(months, "demand"),
            }
        )
    return lines


def project_from_csv(row: dict[str, str]) -> dict[str, Any]:
    project: dict[str, Any] = {}
    for column, raw in row.items():
        text = (raw or "").strip()
        if column is None or not text or column in {"portfolio", "source", "external_id"}:
            continue
        if column in {"revision", "submission_id", "action"}:
            continue
        if column in _NUMBER:
            project[column] = _number(text, column)
        elif column == "mandatory":
            project[column] = text.lower() in {"1", "true", "yes", "y"}
        elif column == "strategic_fit":
            project[column] = _pairs(text, column)
        elif column == "demand":
            project[column] = _demand(text)
        elif column == "depends_on":
            project[column] = [d.strip() for d in text.split(";") if d.strip()]
        elif column.startswith("wsjf_") and column[5:] in _WSJF:
            project.setdefault("wsjf", {})[column[5:]] = _number(text, column)
        else:
            project[column] = text
    return project


def complete(message: dict[str, Any], default_revision: int) -> tuple[bytes, dict[str, Any]]:
    """The message with what an import may leave out filled in, and its key. The id is
    derived from the content, so importing the same file twice has one effect."""
    missing = [k for k in ("portfolio", "source", "external_id") if not message.get(k)]
    if missing:
        raise RowError("missing " + ", ".join(missing))
    message = dict(message)
    message.setdefault("action", "upsert")
    revision = message.get("revision")
    message["revision"] = (
        int(_number(str(revision), "revision")) if revision not in (None, "") else default_revision
    )
    if "submission_id" not in message:
        digest = hashlib.sha256(json.dumps(message, sort_keys=True, default=str).encode())
        message["submission_id"] = str(uuid.uuid5(_NAMESPACE, digest.hexdigest()))
    message.setdefault("submitted_at", datetime.now(UTC).isoformat())
    key = f"{message['portfolio']}/{message['source']}/{message['external_id']}".encode()
    return key, message


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object or the reason the line is not one)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not JSON: {exc.msg}"
                continue
            yield number, value if isinstance(value, dict) else "not a JSON object"


def read(path: Path, *, default_revision: int) -> ImportResult:
    """Every row of ``path`` (CSV, or JSON lines for ``.jsonl``/``.ndjson``) as a submission,
    or the reason it cannot be one."""
    result = ImportResult()
    json_lines = path.suffix.lower() in {".jsonl", ".ndjson"}
    rows = _json_lines(path) if json_lines else _csv_rows(path)
    for number, row in rows:
        if isinstance(row, str):
            result.errors.append((number, row))
            continue
        try:
            key, message = complete(row, default_revision)
        except RowError as exc:
            result.errors.append((number, str(exc)))
            continue
        result.submissions.append((number, key, message))
    return result


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            try:
                message: dict[str, Any] = {
                    k: (row.get(k) or "").strip()
                    for k in ("portfolio", "source", "external_id", "revision", "action")
                    if (row.get(k) or "").strip()
                }
                if message.get("action", "upsert") == "upsert":
                    message["project"] = project_from_csv(row)
            except RowError as exc:
                yield reader.line_num, str(exc)
                continue
            yield reader.line_num, message
