"""The fault suite's table: printed at the end of the run and written to
``tests/artifacts/reliability.json`` (docs/guarantees.md). A plugin of the root conftest, not
the fault suite's: the suite may run in several worker processes (pytest-xdist), each with its
own ``harness.RESULTS``; a test sends its rows with its report (``reliability/conftest.py``),
and only the reports reach the process that prints the table, which collects no tests and so
loads no conftest below the root."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import harness

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "reliability.json"
PROPERTY = "reliability-figures"  # the user property of a report that carries a row
ROWS: list[dict[str, Any]] = []  # the run's rows, as the reports brought them


def table(rows: list[harness.Figures]) -> list[str]:
    head = ("scenario", "events", "lost", "duplicated", "dead-lettered", "recovery s")
    body = [
        (
            f.scenario,
            f"{f.events:,}",
            str(f.lost),
            str(f.duplicated),
            str(f.dead_lettered),
            "—" if f.recovery_seconds is None else f"{f.recovery_seconds:.1f}",
        )
        for f in rows
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    ROWS.extend(json.loads(value) for name, value in report.user_properties if name == PROPERTY)


def scenario_order(row: dict[str, Any]) -> tuple[int, str]:
    number, _, _ = row["scenario"].partition(".")
    return (int(number) if number.isdigit() else 0, row["scenario"])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS or hasattr(terminalreporter.config, "workerinput"):
        return  # a worker's rows are its own only: the controller prints and writes them all
    rows = sorted(ROWS, key=scenario_order)
    mode = "full (PMO_RELIABILITY_FULL=1)" if harness.FULL else "default (make test)"
    terminalreporter.section(f"reliability: {mode}")
    for text in table([harness.Figures(**row) for row in rows]):
        terminalreporter.write_line(text)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(
        json.dumps({"full": harness.FULL, "sizes": asdict(harness.SIZES), "rows": rows}, indent=2)
        + "\n"
    )
    terminalreporter.write_line(f"written to {ARTIFACT}")
