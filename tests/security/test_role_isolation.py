"""Every service's database role against every other service's schema, and the BI role against
everything but the reporting views: each statement is tried for real and must be refused with
``permission denied``; the catalog must agree. The positive side is checked too, so the matrix
cannot pass because nothing was reachable in the first place.

Tables, views, sequences and functions are enumerated from the catalog after migrating all four
services into a fresh database: a table added by a future migration is covered without editing
this file. A *leak* is any statement that got past the privilege check, whether it then
succeeded or failed for another reason (a constraint, a wrong object type)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from shared.migrations import SERVICES, migrate, service_component
from shared.settings import DatabaseSettings, role_url

pytestmark = pytest.mark.integration

BI_ROLE = "pmo_bi"
COMPONENTS = {s: service_component(s) for s in SERVICES}
SCHEMAS = {s: c.schema for s, c in COMPONENTS.items()}
ROLES = {s: c.role for s, c in COMPONENTS.items()}
REPORTING = SCHEMAS["reporting"]


@dataclass
class Tally:
    """Outcomes of the attempted statements; ``leaks`` names every statement that got through."""

    attempts: int = 0
    denied: int = 0
    leaks: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.attempts += other.attempts
        self.denied += other.denied
        self.leaks += other.leaks


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, p partitioned table, v view, m matview, S sequence
    column: str | None  # a plain column, for UPDATE
    # pg_relation_is_updatable: 8 INSERT, 4 UPDATE, 16 DELETE. A view that is not updatable is
    # refused by the rewriter before any privilege check, for everyone (the catalog checks
    # below cover it instead).
    updatable: int

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    @property
    def is_table(self) -> bool:
        return self.kind in ("r", "p")


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    returns_trigger: bool
    arguments: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        return f'"{self.schema}"."{self.name}"({", ".join(self.arguments)})'

    @property
    def call(self) -> str:
        """The function called with a NULL of each argument's type."""
        nulls = ", ".join(f"NULL::{t}" for t in self.arguments)
        return f'"{self.schema}"."{self.name}"({nulls})'


async def relations(conn: asyncpg.Connection[Any], schema: str) -> list[Relation]:
    rows = await conn.fetch(
        "SELECT c.relname, c.relkind::text AS relkind,"
        " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
        "  AND NOT a.attisdropped AND a.attidentity = '' AND a.attgenerated = ''"
        "  ORDER BY a.attnum LIMIT 1) AS col, pg_relation_is_updatable(c.oid, false) AS updatable"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY c.relname",
        schema,
    )
    return [Relation(schema, r["relname"], r["relkind"], r["col"], r["updatable"]) for r in rows]


async def functions(conn: asyncpg.Connection[Any], schema: str) -> list[Function]:
    rows = await conn.fetch(
        "SELECT p.proname, p.prorettype = 'trigger'::regtype AS trig,"
        " array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t) AS args"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1"
        " ORDER BY 1",
        schema,
    )
    return [Function(schema, r["proname"], r["trig"], tuple(r["args"])) for r in rows]


def writes(rel: Relation) -> list[str]:
    """Statements that would change ``rel``, where they can apply at all."""
    if rel.kind == "S":
        return [f"SELECT nextval('{rel.qualified}')", f"SELECT setval('{rel.qualified}', 42)"]
    out = []
    if rel.updatable & 8:
        out.append(f"INSERT INTO {rel.qualified} DEFAULT VALUES")
    if rel.updatable & 16:
        out.append(f"DELETE FROM {rel.qualified}")
    if rel.updatable & 4 and rel.column:
        out.append(f'UPDATE {rel.qualified} SET "{rel.column}" = "{rel.column}"')
    if rel.is_table:
        out.append(f"TRUNCATE {rel.qualified}")
    return out


def read(rel: Relation) -> str:
    return f"SELECT * FROM {rel.qualified} LIMIT 1"


def creates(schema: str) -> list[str]:
    return [
        f'CREATE TABLE "{schema}".intruder (id int)',
        f'CREATE VIEW "{schema}".intruder_v AS SELECT 1 AS one',
        f'CREATE FUNCTION "{schema}".intruder_f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
    ]


async def attempt(conn: asyncpg.Connection[Any], statements: list[str]) -> Tally:
    """Run each statement in a transaction that is always rolled back (a leak changes nothing)."""
    tally = Tally()
    for statement in statements:
        tally.attempts += 1
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(statement)
        except asyncpg.InsufficientPrivilegeError:
            tally.denied += 1
        except asyncpg.PostgresError as exc:
            tally.leaks.append(f"{statement} -> got past the privilege check: {exc!r}")
        else:
            tally.leaks.append(f"{statement} -> succeeded")
        finally:
            await transaction.rollback()
    return tally


async def must_succeed(conn: asyncpg.Connection[Any], statements: list[str]) -> int:
    for statement in statements:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(statement)
        finally:
            await transaction.rollback()
    return len(statements)


@pytest.fixture
async def admin(database: DatabaseSettings) -> AsyncIterator[asyncpg.Connection[Any]]:
    await migrate(database.url, list(COMPONENTS.values()))
    conn = await asyncpg.connect(database.url)
    try:
        yield conn
    finally:
        await conn.close()


async def connect_as(database: DatabaseSettings, role: str) -> asyncpg.Connection[Any]:
    """A session logged in as ``role`` itself (the roles are LOGIN roles, as in production),
    not a superuser that SET ROLE could undo."""
    conn = await asyncpg.connect(role_url(database.url, role))
    who = await conn.fetchrow("SELECT current_user AS cu, session_user AS su")
    assert who is not None
    assert (who["cu"], who["su"]) == (role, role)
    return conn


async def test_roles_have_no_power_beyond_their_schema(
    admin: asyncpg.Connection[Any],
) -> None:
    roles = [*ROLES.values(), BI_ROLE]
    rows = await admin.fetch(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
        " rolbypassrls FROM pg_roles WHERE rolname = ANY($1::text[])",
        roles,
    )
    assert {r["rolname"] for r in rows} == set(roles)
    for r in rows:
        assert r["rolcanlogin"], r["rolname"]
        powers = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
        assert not any(r[p] for p in powers), dict(r)
    # No role is a member of another, directly or through a chain.
    for a in roles:
        for b in roles:
            if a != b:
                assert not await admin.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", a, b)
    # Each service schema is owned by its role and granted to no one else but, for reporting,
    # USAGE to the BI role; PUBLIC has nothing on any of them.
    for service, schema in SCHEMAS.items():
        owner, acl = await admin.fetchrow(
            "SELECT nspowner::regrole::text, coalesce(nspacl::text[], '{}') FROM pg_namespace"
            " WHERE nspname = $1",
            schema,
        )
        assert owner == ROLES[service]
        grantees = {entry.split("=", 1)[0] for entry in acl}
        assert "" not in grantees, f"PUBLIC has {acl} on schema {schema}"
        assert grantees <= {ROLES[service], *([BI_ROLE] if schema == REPORTING else [])}, acl
        for role in roles:
            mine = role == ROLES[service]
            usage = await admin.fetchval(
                "SELECT has_schema_privilege($1, $2, 'USAGE')", role, schema
            )
            create = await admin.fetchval(
                "SELECT has_schema_privilege($1, $2, 'CREATE')", role, schema
            )
            assert usage == (mine or (role == BI_ROLE and schema == REPORTING)), (role, schema)
            assert create == mine, (role, schema)
    # The public schema: PostgreSQL 15 and later grant PUBLIC no CREATE there; nor may ours.
    for role in roles:
        assert not await admin.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", role
        ), role


async def test_no_service_role_reaches_another_service_schema(
    database: DatabaseSettings, admin: asyncpg.Connection[Any]
) -> None:
    catalog = {s: await relations(admin, schema) for s, schema in SCHEMAS.items()}
    routines = {s: await functions(admin, schema) for s, schema in SCHEMAS.items()}
    assert all(catalog.values()), "every schema has tables to attack"
    total = Tally()
    acl_checks = 0
    for service, role in ROLES.items():
        conn = await connect_as(database, role)
        try:
            for other, schema in SCHEMAS.items():
                if other == service:
                    continue
                statements = [s for rel in catalog[other] for s in [read(rel), *writes(rel)]]
                statements += [f"SELECT {f.call}" for f in routines[other]]
                statements += creates(schema)
                total.add(await attempt(conn, statements))
                # The catalog agrees, object by object (not only because USAGE is missing).
                for rel in catalog[other]:
                    kind = "sequence" if rel.kind == "S" else "table"
                    privileges = (
                        "SELECT,USAGE,UPDATE"
                        if rel.kind == "S"
                        else "SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER"
                    )
                    granted = await admin.fetchval(
                        f"SELECT has_{kind}_privilege($1, $2, $3)", role, rel.qualified, privileges
                    )
                    assert not granted, f"{role} has a privilege on {rel.qualified}"
                    acl_checks += 1
            total.add(await attempt(conn, ["CREATE TABLE public.intruder (id int)"]))
        finally:
            await conn.close()
    assert total.leaks == [], "\n".join(total.leaks)
    assert total.denied == total.attempts
    # 3 other schemas for each of 4 roles, each with its tables, views, sequences, functions.
    assert total.attempts > 300, total.attempts
    print(
        f"service roles: {total.attempts} attempts, {total.denied} denied, 0 leaks;"
        f" {acl_checks} catalog checks"
    )


async def test_each_service_role_owns_its_schema(
    database: DatabaseSettings, admin: asyncpg.Connection[Any]
) -> None:
    """The positive side: without it the matrix above would pass on a broken login."""
    done = 0
    for service, role in ROLES.items():
        schema = SCHEMAS[service]
        own = await relations(admin, schema)
        conn = await connect_as(database, role)
        try:
            done += await must_succeed(
                conn,
                [read(r) for r in own]
                + [f"DELETE FROM {r.qualified}" for r in own if r.is_table]
                + creates(schema),
            )
        finally:
            await conn.close()
    assert done > 40


async def test_bi_role_reads_the_views_and_nothing_else(
    database: DatabaseSettings, admin: asyncpg.Connection[Any]
) -> None:
    reporting = await relations(admin, REPORTING)
    views = [r for r in reporting if r.kind == "v" and r.name.startswith("v_")]
    others = [r for r in reporting if r not in views]
    assert len(views) >= 13
    assert any(r.is_table for r in others)
    statements: list[str] = []
    # Reporting's tables, internal views (current_summaries) and sequences: not even readable.
    statements += [s for r in others for s in [read(r), *writes(r)]]
    # The BI views: readable, never writable (simple views are updatable by default).
    statements += [s for r in views for s in writes(r)]
    statements += creates(REPORTING)
    # Every other schema, views included.
    for schema in SCHEMAS.values():
        if schema == REPORTING:
            continue
        rels = await relations(admin, schema)
        statements += [s for r in rels for s in [read(r), *writes(r)]]
        statements += [f"SELECT {f.call}" for f in await functions(admin, schema)]
        statements += creates(schema)
    statements.append("CREATE TABLE public.intruder (id int)")
    bi = await connect_as(database, BI_ROLE)
    try:
        tally = await attempt(bi, statements)
        readable = await must_succeed(bi, [read(v) for v in views])
    finally:
        await bi.close()
    assert tally.leaks == [], "\n".join(tally.leaks)
    assert tally.denied == tally.attempts
    assert readable == len(views)
    # What the catalog grants the BI role in reporting: SELECT on exactly the v_* views.
    granted = {
        r["name"]
        for r in await admin.fetch(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND has_table_privilege($2, c.oid,"
            " 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')",
            REPORTING,
            BI_ROLE,
        )
    }
    assert granted == {v.name for v in views}
    writable = await admin.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND has_table_privilege($2, c.oid,"
        " 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')",
        REPORTING,
        BI_ROLE,
    )
    assert writable == []
    # PostgreSQL grants EXECUTE on new functions to PUBLIC; with USAGE on the schema the BI role
    # could call reporting's functions. Today they are all trigger functions, which cannot be
    # called directly; a plain function added later would be callable and fails this.
    callable_ = [
        f
        for f in await functions(admin, REPORTING)
        if await admin.fetchval(
            "SELECT has_function_privilege($1, $2, 'EXECUTE')",
            BI_ROLE,
            f.signature,
        )
    ]
    assert all(f.returns_trigger for f in callable_), callable_
    print(
        f"pmo_bi: {tally.attempts} attempts, {tally.denied} denied, 0 leaks;"
        f" {readable} views readable"
    )
