"""Moving off the file cache, and cleaning up expired rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from database.cli.app import Options, app, console, errors, run
from database.filecache import ImportReport, import_directory
from database.filecache.importer import cache_files
from database.filecache.limits import DEFAULT_MAX_ALLOCATION, DEFAULT_MAX_FILE_SIZE, MiB
from database.repositories import AnalysisRepository, MarketDataRepository, OptionsDataRepository

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
) -> None:
    """Import the old file cache; safe to run again (it imports nothing twice).

    Exit codes: 0 every file was imported, already present or expired; 1 the
    import failed (nothing more was imported); 3 some files were rejected (each
    listed with its reason; the others were imported).
    """

    def load(options: Options) -> ImportReport:
        manager = options.current_manager()
        total = len(cache_files(directory)) if directory.is_dir() else 0
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
        table = Table(title=f"import of {directory}", show_header=False)
        for name, value in counts.items():
            table.add_row(name.replace("_", " "), str(value))
        console.print(table)
        for name, reason in report.rejected:
            errors.print(f"[yellow]rejected[/] {name}: {reason}", highlight=False)
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
