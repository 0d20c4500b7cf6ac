"""The migrations runner.

Each service owns one schema and one login role. Migrations are numbered SQL files
(``0001_name.sql``); the runner applies shared infrastructure files first, then the service's,
each in its own transaction **as the service's role** with ``search_path`` set to its schema, so a
migration can only create objects the service owns and cannot touch another service's schema.
A cluster-wide advisory lock makes concurrent runners apply each file exactly once; a file
changed after it was applied is refused (checksum).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_KEY = 0x706D6F  # "pmo"

SERVICES = ("intake", "scoring", "capacity", "reporting")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Component:
    """One service's schema, role and migration files."""

    schema: str
    role: str
    migrations: tuple[Migration, ...]
    password: str | None = field(default=None, repr=False)
    # Other login roles the service's migrations grant to (with their passwords, if any).
    grantees: tuple[tuple[str, str | None], ...] = field(default=(), repr=False)


def load_dir(component: str, directory: Traversable) -> tuple[Migration, ...]:
    found = []
    for entry in directory.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(component, int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{component}: duplicate migration numbers {sorted(versions)}")
    return tuple(sorted(found, key=lambda m: m.version))


def shared_migrations() -> tuple[Migration, ...]:
    return load_dir("shared", resources.files("shared") / "sql")


def service_component(service: str, password: str | None = None) -> Component:
    """The component of one of the four services, read from its package's migration files."""
    if service not in SERVICES:
        raise MigrationError(f"unknown service {service!r}")
    directory = resources.files(f"services.{service}") / "migrations"
    own = load_dir(service, directory)
    roles_file = directory / "roles"
    grantees: tuple[tuple[str, str | None], ...] = ()
    if roles_file.is_file():
        names = [
            line.strip()
            for line in roles_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        grantees = tuple(
            (name, os.environ.get(f"PMO_{name.removeprefix('pmo_').upper()}_DATABASE_PASSWORD"))
            for name in names
        )
    return Component(
        schema=service,
        role=f"pmo_{service}",
        migrations=shared_migrations() + own,
        password=password,
        grantees=grantees,
    )


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise MigrationError(f"not a safe identifier: {name!r}")
    return f'"{name}"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _ensure_role(conn: asyncpg.Connection[Any], role: str, password: str | None) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if not exists:
        # Two runners may race here; the advisory lock is held, so only one gets this far.
        await conn.execute(f"CREATE ROLE {_ident(role)} LOGIN")
    if password is not None:
        await conn.execute(f"ALTER ROLE {_ident(role)} PASSWORD {_literal(password)}")
    superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not superuser:
        await conn.execute(f"GRANT {_ident(role)} TO current_user")


async def ensure_role(conn: asyncpg.Connection[Any], role: str, password: str | None) -> None:
    """Create a login role if missing (used for roles outside the service components)."""
    await _ensure_role(conn, role, password)


async def migrate(admin_url: str, components: list[Component]) -> list[Migration]:
    """Apply pending migrations of ``components``; returns what was applied."""
    applied: list[Migration] = []
    conn: asyncpg.Connection[Any] = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            for component in components:
                applied += await _migrate_one(conn, component)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def _migrate_one(conn: asyncpg.Connection[Any], component: Component) -> list[Migration]:
    schema, role = _ident(component.schema), _ident(component.role)
    await _ensure_role(conn, component.role, component.password)
    for grantee, password in component.grantees:
        await _ensure_role(conn, grantee, password)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}")
    await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " component text NOT NULL, version int NOT NULL, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (component, version))"
        )
    done = {
        (r["component"], r["version"]): r["checksum"]
        for r in await conn.fetch(
            f"SELECT component, version, checksum FROM {schema}.schema_migrations"
        )
    }
    applied = []
    for migration in component.migrations:
        key = (migration.component, migration.version)
        if key in done:
            if done[key] != migration.checksum:
                raise MigrationError(
                    f"{component.schema}: {migration.component} migration {migration.version:04d}"
                    f"_{migration.name} was changed after it was applied"
                )
            continue
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            await conn.execute(f"SET LOCAL search_path = {schema}")
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (component, version, name, checksum)"
                " VALUES ($1, $2, $3, $4)",
                migration.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info(
            "applied %s/%s %04d_%s",
            component.schema,
            migration.component,
            migration.version,
            migration.name,
        )
        applied.append(migration)
    return applied


async def status(admin_url: str, components: list[Component]) -> list[tuple[str, Migration, bool]]:
    """Every known migration with whether it is applied, per schema."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(admin_url)
    try:
        result = []
        for component in components:
            exists = await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{component.schema}.schema_migrations"
            )
            done: set[tuple[str, int]] = set()
            if exists:
                rows = await conn.fetch(
                    f"SELECT component, version FROM {_ident(component.schema)}.schema_migrations"
                )
                done = {(r["component"], r["version"]) for r in rows}
            result += [
                (component.schema, m, (m.component, m.version) in done)
                for m in component.migrations
            ]
        return result
    finally:
        await conn.close()
