"""``pmo``: the command line of analysts and operators."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.admin import ensure_topics
from shared.cli import capacity as capacity_cli
from shared.cli import importer
from shared.cli import scoring as scoring_cli
from shared.cli.deadletters import describe, read_all, replay_records
from shared.migrations import SERVICES, migrate, service_component, status
from shared.settings import DatabaseSettings, KafkaSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
migrate_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)
topics_app = typer.Typer(no_args_is_help=True)
app.add_typer(migrate_app, name="migrate", help="Apply or inspect database migrations.")
app.add_typer(topics_app, name="topics", help="Kafka topics of the registry.")
app.add_typer(scoring_cli.app, name="scoring")
app.add_typer(capacity_cli.app, name="capacity")
app.command("ranking")(scoring_cli.ranking)
app.command("movement")(scoring_cli.movement)
app.command("funding")(scoring_cli.funding)
dlq_app = typer.Typer(no_args_is_help=True)
app.add_typer(dlq_app, name="deadletters", help="List, inspect and replay dead letters.")
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
    partitions: Annotated[
        int | None, typer.Option(help="Override every topic's partition count.")
    ] = None,
    replication_factor: Annotated[int, typer.Option(help="Replication factor of new topics.")] = 1,
) -> None:
    """Create the registry's topics that do not exist yet."""
    created = asyncio.run(
        ensure_topics(KafkaSettings(), partitions=partitions, replication_factor=replication_factor)
    )
    for name in created:
        console.print(f"created {name}")
    console.print(f"{len(created)} topic(s) created")


@topics_app.command("status")
def topics_status() -> None:
    """Every topic's size, and each consumer group's position and lag on what it reads."""
    from shared.cli.status import status

    rows = asyncio.run(status(KafkaSettings()))
    table = Table("group", "topic", "partitions", "end offset", "committed", "lag")
    for row in rows:
        table.add_row(
            row.group or "",
            row.topic,
            str(row.partitions),
            str(row.end),
            "" if row.committed is None else str(row.committed),
            "" if row.lag is None else str(row.lag),
        )
    console.print(table)


@app.command("import")
def import_command(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON-lines file")
    ],
    revision: Annotated[
        int | None,
        typer.Option(help="Revision for rows without one (default: the current Unix time)."),
    ] = None,
) -> None:
    """Publish a file of projects to the inbound topic, as an upstream system would.

    CSV columns: portfolio, source, external_id, and any project field; strategic_fit as
    ``growth:4;efficiency:2``, demand as ``role:fte:start_month:months;…``, depends_on as
    ``PRJ-1;PRJ-2``, wsjf_business_value … wsjf_job_size. JSON lines: one submission per line.
    """
    from shared.cli.publishing import publish_import

    result = importer.read(path, default_revision=revision or int(time.time()))
    published = asyncio.run(publish_import(KafkaSettings(), result, console))
    for line, reason in result.errors:
        console.print(f"[red]line {line}[/red]: {reason}")
    console.print(
        f"{published} submission(s) published to the inbound topic, "
        f"{len(result.errors)} row(s) could not be turned into a submission"
    )
    if result.errors:
        raise typer.Exit(1)


ConsumerOption = Annotated[
    str | None, typer.Option(help="Only those refused by this service (intake, capacity …).")
]
CodeOption = Annotated[str | None, typer.Option(help="Only those with this reason code.")]


@dlq_app.command("list")
def deadletters_list(
    consumer: ConsumerOption = None,
    code: CodeOption = None,
    show_value: Annotated[bool, typer.Option(help="Print each original value.")] = False,
) -> None:
    """Dead letters with where they came from and why they were refused."""
    letters = [d for d in asyncio.run(read_all(KafkaSettings())) if d.matches(consumer, code)]
    table = Table("position", "consumer", "source", "key", "reasons")
    for d in letters:
        reasons = "\n".join(
            f"{r.get('path') or '<message>'}: {r.get('code')} - {r.get('message')}"
            for r in d.reasons
        )
        key = (d.record.key or b"").decode("utf-8", "replace")
        table.add_row(d.position, d.consumer, d.source, key, reasons)
        if show_value:
            table.add_row("", "", "", "", (d.record.value or b"")[:2000].decode("utf-8", "replace"))
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("inspect")
def deadletters_inspect(
    position: Annotated[str, typer.Argument(help="partition:offset, as `list` shows it.")],
) -> None:
    """One dead letter in full: origin, every reason, every header, the original key and value."""
    found = [d for d in asyncio.run(read_all(KafkaSettings())) if d.position == position]
    if not found:
        console.print(f"no dead letter at {position}")
        raise typer.Exit(1)
    console.print(describe(found[0]), markup=False, highlight=False)


@dlq_app.command("replay")
def deadletters_replay(
    consumer: ConsumerOption = None,
    code: CodeOption = None,
    position: Annotated[
        list[str] | None, typer.Option(help="partition:offset of a dead letter; repeatable.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be replayed.")] = False,
) -> None:
    """Publish dead letters' original bytes to the topic they came from, after a fix."""
    wanted = set(position or ())
    letters = [
        d
        for d in asyncio.run(read_all(KafkaSettings()))
        if d.matches(consumer, code) and (not wanted or d.position in wanted)
    ]
    records = replay_records(letters)
    for topic, key, _, headers in records:
        console.print(
            f"{'would replay' if dry_run else 'replaying'} {headers[0][1].decode()}"
            f" -> {topic} key={(key or b'').decode('utf-8', 'replace')}"
        )
    if not dry_run:
        from shared.cli.publishing import publish

        count = asyncio.run(publish(KafkaSettings(), records, console, "replaying"))
        console.print(f"{count} record(s) replayed")


@app.command()
def dev(
    kafka_port: Annotated[int, typer.Option(help="Port of the local broker on 127.0.0.1.")] = 9092,
    http_port: Annotated[
        int,
        typer.Option(help="Port of the reporting API; intake, scoring, capacity take the next 3."),
    ] = 8080,
    demo: Annotated[bool, typer.Option(help="Load the demo portfolio.")] = True,
) -> None:
    """Run the whole system locally: Postgres, broker, topics, migrations, the four services and
    a demo portfolio. Ctrl-C stops everything."""
    from shared.cli.dev import run_dev

    raise typer.Exit(
        run_dev(kafka_port=kafka_port, http_port=http_port, demo=demo, console=console)
    )


def main() -> None:
    app()
