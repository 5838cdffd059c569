"""Looking at the database: health, statistics, and the demo."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from database import migrate
from database.cli.app import Options, app, console, run
from database.demo import DemoResult, run_demo
from database.stats import Snapshot, collect


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
        }

    report = run(context, "health", measure)
    healthy = bool(report["reachable"] and report["at_head"])
    if as_json:
        console.print_json(json.dumps({**report, "healthy": healthy}))
    else:
        table = Table(title=f"health of {report['url']}", show_header=False)
        table.add_row("reachable", "yes" if report["reachable"] else f"no: {report['error']}")
        if report["latency_ms"] is not None:
            table.add_row("round trip", f"{report['latency_ms']:.1f} ms")
        table.add_row(
            "schema",
            "at head" if report["at_head"] else f"{report['revision']} (head is {report['head']})",
        )
        pool = report["pool"]
        table.add_row(
            "pool",
            f"size {pool['size']}, checked out {pool['checked_out']}, overflow {pool['overflow']}",
        )
        table.add_row("status", "[green]healthy[/]" if healthy else "[red]unhealthy[/]")
        console.print(table)
    if not healthy:
        raise typer.Exit(1)


@app.command()
def stats(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print Prometheus text.")
    ] = False,
) -> None:
    """Query timings, pool state, cache hit rates and data freshness (this process's counters)."""

    def gather(options: Options) -> Snapshot:
        manager = options.current_manager()
        try:
            return collect(manager)
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


def _print_stats(snapshot: Snapshot) -> None:
    fresh = snapshot.freshness
    table = Table(title=f"data freshness ({snapshot.url})")
    table.add_column("ticker")
    table.add_column("latest price date")
    for ticker, day in fresh.latest_price_dates.items():
        table.add_row(ticker, day.isoformat())
    console.print(table)
    summary = Table(show_header=False)
    summary.add_row("oldest cache entry", str(fresh.oldest_cache_entry or "-"))
    summary.add_row("newest cache entry", str(fresh.newest_cache_entry or "-"))
    summary.add_row("expired cache entries", str(fresh.expired_cache_entries))
    summary.add_row("expired analysis results", str(fresh.expired_analysis_results))
    pool = snapshot.pool
    summary.add_row(
        "pool", f"size {pool.size}, checked out {pool.checked_out}, overflow {pool.overflow}"
    )
    console.print(summary)
    queries = Table(title="statements (this process)")
    for name in ("table", "kind", "count", "p50 ms", "p95 ms", "max ms"):
        queries.add_column(name, justify="right" if "ms" in name or name == "count" else "left")
    for q in snapshot.queries:
        queries.add_row(
            q.table, q.kind, str(q.count), f"{q.p50_ms:.2f}", f"{q.p95_ms:.2f}", f"{q.max_ms:.2f}"
        )
    console.print(queries)


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
            _text(p.allocation_percentage),
            _text(p.target_allocation_percentage),
        )
    table.add_row(
        "total",
        "",
        f"{valuation.total_cost_basis:,.2f}",
        "",
        "",
        f"{valuation.total_market_value:,.2f}",
        f"{valuation.total_gain:+,.2f}",
        "100.00",
        f"{valuation.target_allocation_total} + {valuation.target_cash_percentage} cash",
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
