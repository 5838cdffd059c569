"""Moving off the file cache, and cleaning up expired rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from database.cli.app import Options, app, console, errors, run
from database.filecache import ImportReport, import_directory
from database.filecache.importer import cache_files, dry_run_directory
from database.filecache.limits import DEFAULT_MAX_ALLOCATION, DEFAULT_MAX_FILE_SIZE, MiB
from database.repositories import AnalysisRepository, MarketDataRepository, OptionsDataRepository


def _printable(text: str) -> str:
    """``text`` with its control characters (terminal escapes, newlines) written as
    escapes: a file name must not move the cursor or fake a line of the report."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


REJECTED_FILES = 3  # import-cache's exit code when it rejected files (2 is a usage error)


@app.command("import-cache")
def import_cache(
    context: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="The old cache directory (files named <key>.cache).")
    ],
    include_expired: Annotated[
        bool, typer.Option("--include-expired", help="Import expired entries too.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Files per transaction.")
    ] = 500,
    max_file_size: Annotated[
        int,
        typer.Option(
            "--max-file-size",
            min=1,
            metavar="MIB",
            help="Reject (unread) a file larger than this many MiB.",
        ),
    ] = DEFAULT_MAX_FILE_SIZE // MiB,
    max_allocation: Annotated[
        int,
        typer.Option(
            "--max-allocation",
            min=1,
            metavar="MIB",
            help="Reject a pickle whose opcodes would allocate more than this many MiB.",
        ),
    ] = DEFAULT_MAX_ALLOCATION // MiB,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only report what would be imported, skipped as expired or rejected, per data"
            " type and pandas version; write nothing (no database is opened).",
        ),
    ] = False,
) -> None:
    """Import the old file cache; safe to run again (it imports nothing twice).

    Exit codes: 0 every file was imported, already present or expired; 1 the
    import failed (nothing more was imported); 3 some files were rejected (each
    listed with its reason; the others were imported). With --dry-run the same
    codes say what the import would do.
    """
    if dry_run:
        _dry_run(context, directory, include_expired, max_file_size, max_allocation, as_json)
        return

    def load(options: Options) -> ImportReport:
        manager = options.current_manager()
        if not directory.is_dir():  # the import says so, before any progress bar
            try:
                return import_directory(manager, directory)
            finally:
                manager.close()
        total = len(cache_files(directory))
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns, console=errors) as progress:
                task = progress.add_task("import", total=total)
                return import_directory(
                    manager,
                    directory,
                    include_expired=include_expired,
                    batch_size=batch_size,
                    on_progress=lambda n: progress.advance(task, n),
                    max_file_size=max_file_size * MiB,
                    max_allocation=max_allocation * MiB,
                )
        finally:
            manager.close()

    report = run(context, "import-cache", load)
    counts = {
        "imported": report.imported,
        "already_present": report.already_present,
        "expired": report.expired,
        "rejected": len(report.rejected),
    }
    if as_json:
        console.print_json(json.dumps({**counts, "rejected_files": dict(report.rejected)}))
    else:
        # the path on a line of its own: whole, never wrapped inside a title
        console.print(
            f"import of {_printable(str(directory))}", soft_wrap=True, highlight=False, markup=False
        )
        table = Table(show_header=False)
        for name, value in counts.items():
            table.add_row(name.replace("_", " "), str(value))
        console.print(table)
        for name, reason in report.rejected:
            errors.print(
                f"[yellow]rejected[/] {escape(_printable(name))}: {escape(_printable(reason))}",
                highlight=False,
            )
    if report.rejected:
        raise typer.Exit(REJECTED_FILES)


def _dry_run(
    context: typer.Context,
    directory: Path,
    include_expired: bool,
    max_file_size: int,
    max_allocation: int,
    as_json: bool,
) -> None:
    """``import-cache --dry-run``: the import's reading and checking, without the database."""
    report = run(
        context,
        "import-cache --dry-run",
        lambda options: dry_run_directory(
            directory,
            include_expired=include_expired,
            max_file_size=max_file_size * MiB,
            max_allocation=max_allocation * MiB,
        ),
    )
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        console.print(
            f"dry run of {_printable(str(directory))}: nothing written",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        totals = Table(show_header=False)
        totals.add_row("would import", str(report.would_import))
        totals.add_row("expired (skipped)", str(report.expired))
        totals.add_row("would reject", str(len(report.rejected)))
        console.print(totals)
        kinds = Table("data type", "pandas", "would import", "expired", "would reject")
        for group in report.by_type():
            kinds.add_row(
                group["data_type"],
                group["pandas"],
                *(str(group[n]) for n in ("would_import", "expired", "rejected")),
            )
        console.print(kinds)
        for name, reason in report.rejected:
            errors.print(
                f"[yellow]would reject[/] {escape(_printable(name))}: {escape(_printable(reason))}",
                highlight=False,
            )
    if report.rejected:
        raise typer.Exit(REJECTED_FILES)


@app.command()
def cleanup(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Delete expired cache entries, expired analysis results and expired option contracts."""

    def clean(options: Options) -> dict[str, int]:
        manager = options.current_manager()
        try:
            with manager.get_session(system=True) as session:
                return {
                    "cache_entries": MarketDataRepository().delete_expired(session),
                    "analysis_results": AnalysisRepository().delete_expired(session),
                    "option_contracts": OptionsDataRepository().purge_expired(session),
                }
        finally:
            manager.close()

    counts = run(context, "cleanup", clean)
    if as_json:
        console.print_json(json.dumps(counts))
        return
    for name, value in counts.items():
        console.print(f"deleted {value} expired {name.replace('_', ' ')}", highlight=False)
