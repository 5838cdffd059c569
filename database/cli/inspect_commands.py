"""Looking at the database: health, statistics, and the demo."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from database import migrate
from database.cli.app import Options, app, console, run
from database.demo import DemoResult, run_demo
from database.stats import Snapshot, collect, shorten


@app.command()
def health(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reachable, round-trip latency, schema at head, pool state; exit 0 only when all is well."""

    def measure(options: Options) -> dict[str, Any]:
        manager = options.existing_manager()
        try:
            status = manager.check_health()
            revision = (
                migrate.current_revision(
                    manager.urls.sync_url.render_as_string(hide_password=False)
                )
                if status.ok
                else None
            )
            pool = manager.pool_status()
        finally:
            manager.close()
        head = migrate.head_revision()
        return {
            "url": status.url,
            "reachable": status.ok,
            "latency_ms": status.latency_ms,
            "error": status.error,
            "revision": revision,
            "head": head,
            "at_head": status.ok and revision == head,
            "pool": {"size": pool.size, "checked_out": pool.checked_out, "overflow": pool.overflow},
            # Each replica checked now; a lagging or down one is skipped, not a failure.
            "replicas": [replica.to_dict() for replica in status.replicas],
        }

    report = run(context, "health", measure)
    healthy = bool(report["reachable"] and report["at_head"])
    if as_json:
        console.print_json(json.dumps({**report, "healthy": healthy}))
    else:
        _print_url("health of", report["url"])
        table = Table(show_header=False)
        reachable = "yes" if report["reachable"] else f"no: {escape(str(report['error']))}"
        table.add_row("reachable", reachable)
        if report["latency_ms"] is not None:
            table.add_row("round trip", f"{report['latency_ms']:.1f} ms")
        if not report["reachable"]:
            schema = f"unknown: not reachable (head is {report['head']})"
        elif report["at_head"]:
            schema = "at head"
        else:
            schema = f"{report['revision'] or 'no schema'} (head is {report['head']})"
        table.add_row("schema", schema)
        pool = report["pool"]
        table.add_row(
            "pool",
            f"size {pool['size']}, checked out {pool['checked_out']}, overflow {pool['overflow']}",
        )
        for number, replica in enumerate(report["replicas"], 1):
            table.add_row(f"replica {number}", _replica_line(replica))
        table.add_row("status", "[green]healthy[/]" if healthy else "[red]unhealthy[/]")
        console.print(table)
        _print_replica_urls(report["replicas"])
    if not healthy:
        raise typer.Exit(1)


@app.command()
def stats(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print Prometheus text.")
    ] = False,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many of pg_stat_statements' statements.")
    ] = 10,
) -> None:
    """Data freshness, pool state, the database's statement statistics (pg_stat_statements,
    PostgreSQL) and this process's own counters."""

    def gather(options: Options) -> Snapshot:
        manager = options.current_manager()
        try:
            return collect(manager, top_statements=top)
        finally:
            manager.close()

    snapshot = run(context, "stats", gather)
    if prometheus:
        console.out(snapshot.to_prometheus(), end="", highlight=False)
        return
    if as_json:
        console.print_json(json.dumps(snapshot.to_dict()))
        return
    _print_stats(snapshot)


def _print_url(what: str, url: str) -> None:
    """A title line with the URL whole (never wrapped, so that it can be copied)."""
    console.print(f"{what} {url}", soft_wrap=True, highlight=False, markup=False)


def _replica_line(replica: dict[str, Any]) -> str:
    """A replica's state as health and stats show it: ok, lagging or down, and why."""
    lag = replica["lag_s"]
    behind = "unknown lag" if lag is None else f"{lag:.2f} s behind"
    if replica["state"] == "down":
        return f"down: {escape(str(replica['error']))}"
    connections = f"{replica['open_connections']} of {replica['connection_budget']} connections"
    return f"{replica['state']}, {behind}, {connections}"


def _print_replica_urls(replicas: list[dict[str, Any]]) -> None:
    for number, replica in enumerate(replicas, 1):
        _print_url(f"replica {number} is", replica["url"])


def _print_stats(snapshot: Snapshot) -> None:
    _print_url("statistics of", snapshot.url)
    fresh = snapshot.freshness
    table = Table(title="data freshness")
    table.add_column("ticker", no_wrap=True)
    table.add_column("latest price date", no_wrap=True)
    for ticker, day in sorted(fresh.latest_price_dates.items()):
        table.add_row(ticker, day.isoformat())
    console.print(table)
    summary = Table(show_header=False)
    summary.add_row("oldest cache entry", str(fresh.oldest_cache_entry or "-"))
    summary.add_row("newest cache entry", str(fresh.newest_cache_entry or "-"))
    summary.add_row("expired cache entries", str(fresh.expired_cache_entries))
    summary.add_row("expired analysis results", str(fresh.expired_analysis_results))
    pool = snapshot.pool
    summary.add_row(
        "pool (this process)",
        f"size {pool.size}, checked out {pool.checked_out}, overflow {pool.overflow}",
    )
    replicas = [replica.to_dict() for replica in snapshot.replicas]
    for number, replica in enumerate(replicas, 1):
        summary.add_row(f"replica {number}", _replica_line(replica))
    console.print(summary)
    _print_replica_urls(replicas)
    _print_database_statements(snapshot)
    queries = Table(title="statements of this process (buffetbot-db stats itself)")
    for name in ("table", "kind", "count", "total ms", "mean ms", "~p50 ms", "~p95 ms"):
        queries.add_column(
            name, justify="left" if name in ("table", "kind") else "right", no_wrap=True
        )
    for q in snapshot.queries:
        queries.add_row(
            q.table,
            q.kind,
            str(q.count),
            f"{q.total_ms:.2f}",
            f"{q.mean_ms:.2f}",
            _ms(q.p50_ms),
            _ms(q.p95_ms),
        )
    console.print(queries)
    console.print(
        "~p50, ~p95: estimated from the latency histogram's buckets", style="dim", highlight=False
    )


def _print_database_statements(snapshot: Snapshot) -> None:
    found = snapshot.database_statements
    if not found.available:
        console.print("database statements, all processes (pg_stat_statements)", style="italic")
        console.print(found.note, highlight=False, markup=False)
        return
    title = "database statements, all processes (pg_stat_statements, top by total time)"
    table = Table(title=title)
    for name in ("calls", "total ms", "mean ms", "rows"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("query", no_wrap=True, overflow="ellipsis")
    numbers = [
        (f"{s.calls:,}", f"{s.total_ms:,.2f}", f"{s.mean_ms:,.2f}", f"{s.rows:,}")
        for s in found.statements
    ]
    # Room left for the query once the number columns (and the borders) are drawn.
    used = sum(
        max([len(name), *(len(n[i]) for n in numbers)]) + 3
        for i, name in enumerate(("calls", "total ms", "mean ms", "rows"))
    )
    width = max(console.width - used - 4, 20)
    for statement, row in zip(found.statements, numbers, strict=True):
        query = "(hidden: needs pg_read_all_stats)" if statement.hidden else statement.query
        table.add_row(*row, shorten(query, width))
    console.print(table)
    if found.note:
        console.print(found.note, highlight=False, markup=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command()
def demo(context: typer.Context) -> None:
    """The quick start on sample data: migrate, fill, and print the portfolio's value."""
    result = run(context, "demo", lambda options: run_demo(options.manager()))
    _print_demo(result)


def _print_demo(result: DemoResult) -> None:
    portfolio = result.portfolio
    console.print(
        f"user [bold]{result.user.username}[/] <{result.user.email}>; "
        f"portfolio [bold]{portfolio.name}[/] ({portfolio.risk_tolerance.value}, "
        f"cash target {portfolio.target_cash_percentage}%)",
        highlight=False,
    )
    table = Table(title="portfolio at the latest close")
    names = (
        "ticker",
        "shares",
        "cost basis",
        "close",
        "as of",
        "value",
        "gain",
        "alloc %",
        "target %",
    )
    for name in names:
        table.add_column(name, justify="left" if name in ("ticker", "as of") else "right")
    valuation = result.valuation
    for p in valuation.positions:
        colour = "red" if p.gain is not None and p.gain < 0 else "green"
        table.add_row(
            p.ticker,
            f"{p.shares:,.2f}",
            _amount(p.cost_basis),
            _amount(p.close),
            _text(p.close_date),
            _amount(p.market_value),
            f"[{colour}]{_amount(p.gain, '+,.2f')}[/]",
            _amount(p.allocation_percentage),
            _amount(p.target_allocation_percentage),
        )
    table.add_row(
        "total",
        "",
        _amount(valuation.total_cost_basis),
        "",
        "",
        _amount(valuation.total_market_value),
        _amount(valuation.total_gain, "+,.2f"),
        "100.00",
        f"{valuation.target_allocation_total:,.2f} + {valuation.target_cash_percentage:,.2f} cash",
    )
    console.print(table)
    console.print(
        f"{result.bars_loaded:,} price bars, {result.analyses} analysis results, "
        f"{result.cache_entries} cache entries stored",
        highlight=False,
    )


def _amount(value: Decimal | None, spec: str = ",.2f") -> str:
    """Money and prices with two decimals; an unknown figure (no cost, no price) blank."""
    return "" if value is None else format(value, spec)


def _text(value: object) -> str:
    return "" if value is None else str(value)
