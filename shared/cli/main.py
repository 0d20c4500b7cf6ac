"""``pmo``: the command line of analysts and operators."""

from __future__ import annotations

import asyncio
import os

import typer
from rich.console import Console
from rich.table import Table

from shared.admin import ensure_topics
from shared.migrations import SERVICES, migrate, service_component, status
from shared.settings import DatabaseSettings, KafkaSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
migrate_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)
topics_app = typer.Typer(no_args_is_help=True)
app.add_typer(migrate_app, name="migrate", help="Apply or inspect database migrations.")
app.add_typer(topics_app, name="topics", help="Kafka topics of the registry.")
console = Console()


def _password(service: str) -> str | None:
    return os.environ.get(f"PMO_{service.upper()}_DATABASE_PASSWORD")


@migrate_app.callback()
def migrate_command(ctx: typer.Context) -> None:
    """Apply pending migrations of every service (PMO_DATABASE_URL is the owner connection)."""
    if ctx.invoked_subcommand is not None:
        return
    database = DatabaseSettings()
    components = [service_component(s, _password(s)) for s in SERVICES]
    applied = asyncio.run(migrate(database.url, components))
    for m in applied:
        console.print(f"applied {m.component} {m.version:04d}_{m.name}")
    console.print(f"{len(applied)} migration(s) applied")


@migrate_app.command("status")
def migrate_status() -> None:
    """Show every migration and whether it is applied."""
    database = DatabaseSettings()
    rows = asyncio.run(status(database.url, [service_component(s) for s in SERVICES]))
    table = Table("schema", "component", "migration", "applied")
    for schema, m, done in rows:
        table.add_row(schema, m.component, f"{m.version:04d}_{m.name}", "yes" if done else "no")
    console.print(table)


@topics_app.command("create")
def topics_create(
    partitions: int | None = typer.Option(None, help="Override every topic's partition count."),
    replication_factor: int = typer.Option(1, help="Replication factor of new topics."),
) -> None:
    """Create the registry's topics that do not exist yet."""
    created = asyncio.run(
        ensure_topics(KafkaSettings(), partitions=partitions, replication_factor=replication_factor)
    )
    for name in created:
        console.print(f"created {name}")
    console.print(f"{len(created)} topic(s) created")


@app.command()
def dev(
    kafka_port: int = typer.Option(9092, help="Port of the local broker on 127.0.0.1."),
    http_port: int = typer.Option(
        8080, help="Port of the reporting API; intake, scoring and capacity take the next three."
    ),
    demo: bool = typer.Option(True, help="Load the demo portfolio."),
) -> None:
    """Run the whole system locally: Postgres, broker, topics, migrations, the four services and
    a demo portfolio. Ctrl-C stops everything."""
    from shared.cli.dev import run_dev

    raise typer.Exit(
        run_dev(kafka_port=kafka_port, http_port=http_port, demo=demo, console=console)
    )


def main() -> None:
    app()
