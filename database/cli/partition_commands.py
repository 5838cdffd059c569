"""``buffetbot-db partitions``: the partitions of the market tables (PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from sqlalchemy import Connection

from database import partitions
from database.cli.app import Options, app, console, run
from database.exceptions import ConfigurationError

partitions_app = typer.Typer(
    help="The partitions of price_history (yearly) and options_data (monthly), on PostgreSQL.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(partitions_app, name="partitions", rich_help_panel="Data")

T = TypeVar("T")
TABLES = tuple(partitions.SCHEMES)
TableArgument = Annotated[
    str | None,
    typer.Argument(
        help=f"One table ({' or '.join(TABLES)}); both when left out.", show_default=False
    ),
]


def _tables(table: str | None) -> list[partitions.Scheme]:
    return [partitions.scheme_of(table)] if table else list(partitions.SCHEMES.values())


def _on_partitioned(options: Options, action: Callable[[Connection], T]) -> T:
    """Run ``action(connection)`` in one transaction on a database whose market tables
    are partitioned (PostgreSQL at schema 0005 or later)."""
    manager = options.current_manager()
    try:
        if manager.urls.is_sqlite:
            raise ConfigurationError(
                "partitions are PostgreSQL's: SQLite's market tables are plain tables"
            )
        with manager.engine.begin() as connection:
            if not partitions.is_partitioned(connection, "price_history"):
                raise ConfigurationError(
                    "the market tables are not partitioned: run `buffetbot-db upgrade`"
                )
            return action(connection)
    finally:
        manager.close()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


@partitions_app.command("list")
def list_partitions(
    context: typer.Context,
    table: TableArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each partition with its range, rows and size (the default partition last)."""

    def read(options: Options) -> list[partitions.Partition]:
        return _on_partitioned(
            options,
            lambda c: [p for s in _tables(table) for p in partitions.partitions(c, s.table)],
        )

    found = run(context, "partitions list", read)
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {
                        "table": p.table,
                        "name": p.name,
                        "from": p.start and p.start.isoformat(),
                        "to": p.end and p.end.isoformat(),
                        "rows": p.rows,
                        "rows_estimated": p.rows_estimated,
                        "bytes": p.bytes,
                    }
                    for p in found
                ]
            )
        )
        return
    shown = Table(title="partitions")
    for name in ("partition", "from", "to", "rows", "size"):
        shown.add_column(
            name, no_wrap=True, justify="right" if name in ("rows", "size") else "left"
        )
    for p in found:
        rows = f"~{p.rows:,}" if p.rows_estimated else f"{p.rows:,}"
        start = p.start.isoformat() if p.start else "(default)"
        shown.add_row(p.name, start, p.end.isoformat() if p.end else "", rows, _size(p.bytes))
    console.print(shown)


@partitions_app.command("create")
def create_partitions(
    context: typer.Context,
    table: TableArgument = None,
    ahead: Annotated[
        int,
        typer.Option(
            "--ahead", min=0, max=1000, help="Periods after the current one (years or months)."
        ),
    ] = 3,
) -> None:
    """Create the current period's partition and the next ones (taking over their rows from the default partition)."""  # noqa: E501 - one line in --help

    def make(options: Options) -> list[str]:
        return _on_partitioned(
            options,
            lambda c: [n for s in _tables(table) for n in partitions.create_ahead(c, s, ahead)],
        )

    made = run(context, "partitions create", make)
    if not made:
        console.print("every partition exists already", highlight=False)
    for name in made:
        console.print(f"created {name}", highlight=False, markup=False)


@partitions_app.command("drop")
def drop_partitions(
    context: typer.Context,
    table: Annotated[str, typer.Argument(help=f"The table: {' or '.join(TABLES)}.")],
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            min=1,
            max=1000,
            help="Keep this many periods before the current one (months or years).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Detach and drop the partitions that ended before the retention window (no row-by-row DELETE)."""  # noqa: E501 - one line in --help

    def drop(options: Options) -> tuple[dt.date, list[partitions.Partition]]:
        scheme = partitions.scheme_of(table)
        cutoff = scheme.start_of(dt.datetime.now(dt.UTC).date())
        for _ in range(older_than):
            cutoff = _before(scheme, cutoff)
        return cutoff, _on_partitioned(options, lambda c: partitions.drop_before(c, scheme, cutoff))

    cutoff, dropped = run(context, "partitions drop", drop)
    if as_json:
        report = {
            "before": cutoff.isoformat(),
            "dropped": [p.name for p in dropped],
            "rows": sum(p.rows for p in dropped),
        }
        console.print_json(json.dumps(report))
        return
    if not dropped:
        console.print(f"no partition of {table} ends before {cutoff}", highlight=False)
    for p in dropped:
        console.print(f"dropped {p.name} ({p.rows:,} rows)", highlight=False, markup=False)


def _before(scheme: partitions.Scheme, start: dt.date) -> dt.date:
    """The start of the period before the one that starts at ``start``."""
    if not scheme.monthly:
        return start.replace(year=start.year - 1)
    return start.replace(year=start.year - (start.month == 1), month=(start.month - 2) % 12 + 1)
