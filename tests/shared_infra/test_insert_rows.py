"""``insert_rows`` on real Postgres: a batch's few rows as one INSERT over arrays, many as a
COPY, and the same rows stored either way (NULLs, bytes, JSON and text with quotes)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from shared import db
from shared.db import insert_rows
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

COLUMNS = (("name", "text"), ("payload", "bytea"), ("doc", "jsonb"), ("n", "bigint"))


def rows(count: int, tag: str) -> list[tuple[object, ...]]:
    return [
        (
            f"{tag} 'row' {i}" if i % 3 else None,
            bytes([i % 256, 0, 255]) if i % 5 else None,
            json.dumps({"i": i, "text": 'a "quoted" , {brace}'}),
            i,
        )
        for i in range(count)
    ]


async def test_few_rows_are_one_insert_and_many_a_copy_with_the_same_result(
    database: DatabaseSettings,
) -> None:
    conn = await asyncpg.connect(database.url)
    try:
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
    finally:
        await conn.close()
    expected = [(n, p, json.loads(d), i) for n, p, d, i in [*few, *many]]
    assert [(r["name"], r["payload"], json.loads(r["doc"]), r["n"]) for r in stored] == expected
