"""Connection pools: one per service, logged in as the service's role, confined to its schema."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


async def create_pool(
    url: str, *, schema: str, application_name: str, min_size: int = 1, max_size: int = 8
) -> asyncpg.Pool[Any]:
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": application_name},
        # Statements are prepared per connection; a failover must not leave stale ones behind.
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
    )
    return pool


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """What a connection needs before it goes back to the pool, beyond asyncpg's own rollback
    of an open transaction: nothing. asyncpg's default runs a reset query (``RESET ALL``,
    ``UNLISTEN *``, ``pg_advisory_unlock_all()`` …) on every release: a round trip for each
    API request, about 8 % of reporting's CPU under load. pmo keeps no session state on pooled
    connections: locks and settings are transaction-scoped, the search path is a startup
    parameter, and the outbox relay, whose turn is a session lock, gives it back with its
    settings and removes its listener before it releases its connection
    (tests/shared_infra/test_locks.py and test_outbox.py check that nothing leaks); so does
    reporting's history retention with its index build's lock, or closes the connection
    (tests/reporting/integration/test_history_retention.py)."""


@contextlib.contextmanager
def closed_on_failure(conn: Any) -> Iterator[None]:
    """Close pooled connection ``conn`` at once if the block, which gives back what its session
    holds (the relay's turn and settings, a listener, a session lock), fails or is cancelled:
    what it holds is then not known to be given back, and the pool would hand it on as it is; a
    closed session's locks the server releases. A failure of the connection ends here, anything
    else goes on."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        _close(conn)
    except BaseException:
        _close(conn)
        raise


def _close(conn: Any) -> None:
    """Close a pooled connection at once; one the pool took back already, when it broke, is
    closed."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def usable(conn: Any) -> bool:
    """Whether a pooled connection can still be used: when its connection breaks (the database
    restarts, the network drops it), the pool takes it back and the proxy raises on any call."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


# Up to this many rows go in as one INSERT over arrays; more as a COPY. A COPY takes two round
# trips (the server asks for the data, then confirms it) and one INSERT of a prepared statement
# one; a COPY moves many rows for less (a rescore writes 100,000 outbox rows).
COPY_ABOVE = 500


def unnest_arguments(
    columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> tuple[str, list[list[Any]]]:
    """For ``unnest`` over one array per column: the typed parameters (``$1::text[], …``, from
    ``columns``' (name, Postgres type)) and the arrays themselves, ``rows`` transposed."""
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(columns, start=1))
    return arrays, [list(column) for column in zip(*rows, strict=True)]


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement that changes rows and returns none, with its arguments (``$1`` …): run on
    its own, or with others as one (``combined``)."""

    sql: str
    args: tuple[Any, ...] = ()


def combined(statements: Sequence[Statement]) -> Statement:
    """One statement that runs each of ``statements``, in one round trip: each is a WITH query
    of its own (Postgres runs a data-modifying WITH query once, to completion, whether or not
    the main query reads it), its placeholders renumbered after the ones before.

    Every part runs on the statement's one snapshot: none sees another's rows, and no two may
    change the same row. So it is for writes that the transaction reads no more, as a
    handler's last writes before its commit are (``PostgresUnitOfWork.defer``). A part's SQL
    holds no ``$`` but its placeholders, as the builders here write it."""
    if len(statements) == 1:
        return statements[0]
    parts: list[str] = []
    args: list[Any] = []
    for i, statement in enumerate(statements):
        parts.append(f"w{i} AS ({_renumbered(statement.sql, len(args))})")
        args.extend(statement.args)
    return Statement(f"WITH {', '.join(parts)} SELECT", tuple(args))


def _renumbered(sql: str, offset: int) -> str:
    return _PLACEHOLDER.sub(lambda m: f"${int(m[1]) + offset}", sql)


_PLACEHOLDER = re.compile(r"\$(\d+)")


def insert_statement(
    table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> Statement:
    """Append ``rows`` (values in the order of ``columns``: (name, Postgres type)) to ``table``
    in one INSERT of ``unnest`` over one array per column, in the rows' order."""
    names = [name for name, _ in columns]
    arrays, values = unnest_arguments(columns, rows)
    listed = ", ".join(names)
    # In the rows' order, as a COPY would: an identity column (the outbox's) numbers them so.
    return Statement(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM unnest({arrays})"
        f" WITH ORDINALITY AS t ({listed}, pmo_position) ORDER BY pmo_position",
        tuple(values),
    )


def copied(rows: Sequence[Sequence[Any]], *, large: bool = False) -> bool:
    """Whether ``insert_rows`` copies these rows (many, or a few ``large`` ones) rather than
    inserting them in one statement."""
    return large or len(rows) > COPY_ABOVE


async def insert_rows(
    conn: Any,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    large: bool = False,
) -> None:
    """Append ``rows`` (values in the order of ``columns``: (name, Postgres type)) to
    ``table``: one INSERT of ``unnest`` over one array per column for a batch's few rows
    (``insert_statement``), a binary COPY for many, or for a few ``large`` ones (megabytes: an
    array that size is built, unnested and sorted whole by the server)."""
    if not rows:
        return
    if copied(rows, large=large):
        await conn.copy_records_to_table(table, columns=[name for name, _ in columns], records=rows)
        return
    statement = insert_statement(table, columns, rows)
    await conn.execute(statement.sql, *statement.args)


async def upsert_rows(
    conn: Any,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    key: Sequence[str],
) -> None:
    """Insert ``rows`` into ``table``, or overwrite every other column of the row already
    there, in one statement over one array per column (not ``executemany``'s statement per
    row). ``key`` names the conflict columns, the first of ``columns``. Of several rows with one
    key, the last is written, as one statement per row in order would leave it."""
    if not rows:
        return
    width = len(key)
    names = [name for name, _ in columns]
    if tuple(names[:width]) != tuple(key):
        raise ValueError(f"the key {key} must be the first of the columns {names}")
    latest = {tuple(row[:width]): row for row in rows}
    arrays, values = unnest_arguments(columns, list(latest.values()))
    updates = ", ".join(f"{c} = excluded.{c}" for c in names[width:])
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
        *values,
    )
