"""``insert_rows`` on real Postgres: a batch's few rows as one INSERT over arrays, many as a
COPY, and the same rows stored either way (NULLs, bytes, JSON and text with quotes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared import db
from shared.db import insert_rows, upsert_rows
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

COLUMNS = (("name", "text"), ("payload", "bytea"), ("doc", "jsonb"), ("n", "bigint"))


def rows(count: int, tag: str) -> list[tuple[Any, ...]]:
    return [
        (
            f"{tag} 'row' {i}" if i % 3 else None,
            bytes([i % 256, 0, 255]) if i % 5 else None,
            json.dumps({"i": i, "text": 'a "quoted" , {brace}'}),
            i,
        )
        for i in range(count)
    ]


@pytest.fixture
async def conn(database: DatabaseSettings) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection of its own: the tests' tables are temporary, gone when it closes."""
    connection = await asyncpg.connect(database.url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_few_rows_are_one_insert_and_many_a_copy_with_the_same_result(
    conn: asyncpg.Connection[Any],
) -> None:
    await conn.execute(
        "CREATE TEMP TABLE appended (id bigint GENERATED ALWAYS AS IDENTITY, name text,"
        " payload bytea, doc jsonb, n bigint)"
    )
    few, many = rows(7, "few"), rows(db.COPY_ABOVE + 1, "many")
    async with conn.transaction():
        await insert_rows(conn, "appended", COLUMNS, few)
    async with conn.transaction():
        await insert_rows(conn, "appended", COLUMNS, many)
    await insert_rows(conn, "appended", COLUMNS, [])
    stored = await conn.fetch("SELECT name, payload, doc, n FROM appended ORDER BY id")
    expected = [(n, p, json.loads(d), i) for n, p, d, i in [*few, *many]]
    assert [(r["name"], r["payload"], json.loads(r["doc"]), r["n"]) for r in stored] == expected


async def test_an_upsert_overwrites_and_the_last_row_of_a_key_wins(
    conn: asyncpg.Connection[Any],
) -> None:
    await conn.execute(
        "CREATE TEMP TABLE kept (k text, part int, doc jsonb, n bigint, PRIMARY KEY (k, part))"
    )
    columns = (("k", "text"), ("part", "int"), ("doc", "jsonb"), ("n", "bigint"))
    await upsert_rows(
        conn, "kept", columns, [("a", 1, "{}", 1), ("b", 1, "{}", 1)], key=("k", "part")
    )
    await upsert_rows(
        conn,
        "kept",
        columns,
        # b twice in one statement (a statement per row would leave the last), a new part of
        # a, and a row with no document
        [("b", 1, '{"v": 2}', 2), ("a", 2, None, 5), ("b", 1, '{"v": 3}', 3)],
        key=("k", "part"),
    )
    await upsert_rows(conn, "kept", columns, [], key=("k", "part"))
    stored = await conn.fetch("SELECT k, part, doc, n FROM kept ORDER BY k, part")
    assert [tuple(r) for r in stored] == [
        ("a", 1, "{}", 1),
        ("a", 2, None, 5),
        ("b", 1, '{"v": 3}', 3),
    ]


async def test_an_upsert_refuses_a_key_that_is_not_its_first_columns() -> None:
    with pytest.raises(ValueError, match="must be the first"):
        await upsert_rows(None, "kept", COLUMNS, [("a", b"", "{}", 1)], key=("n",))
