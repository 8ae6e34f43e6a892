"""Human output: rich tables and progress bars (JSON output is built by the commands)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# piped output (CI logs, files) gets wide tables instead of rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[int, int, str], None]]:
    """Yields `update(done, total, label)`; draws a bar with ETA on stderr when enabled."""
    if not enabled:
        yield lambda done, total, label: None
        return
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("sweep", total=None)

        def update(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, description=label)

        yield update


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e4:
        return f"{value / 1e3:,.1f} ms"
    return f"{value:,.1f} µs"


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{int(n)} B"


def sweep_summary_table(summary: Any) -> None:
    table = Table(title=f"sweep -> {summary.lut_path}", show_header=False)
    for key, value in summary.as_dict().items():
        if key == "error_messages":
            continue
        table.add_row(key, str(value))
    console.print(table)
    for message in summary.error_messages[:10]:
        err_console.print(f"[red]error[/red] {message}")


LUT_COLUMNS = (
    ("op", "op"),
    ("width", "width"),
    ("batch", "batch"),
    ("context", "context"),
    ("backend", "backend"),
    ("mode", "mode"),
    ("dtype", "dtype"),
)


def lut_table(rows: list[dict[str, Any]], title: str) -> Table:
    """LUT rows with latency, spread, achieved GB/s and percent of the bandwidth floor."""
    table = Table(title=title)
    for _, header in LUT_COLUMNS:
        table.add_column(
            header, justify="right" if header in ("width", "batch", "context") else "left"
        )
    for header in ("median", "p10-p90", "cv", "floor", "GB/s", "% floor", "flags"):
        table.add_column(header, justify="right")
    for r in rows:
        cells = [str(r.get(k) if r.get(k) is not None else "-") for k, _ in LUT_COLUMNS]
        if r.get("context") == 0 and r.get("phase") == "decode":
            cells[3] = "any"
        if r.get("phase") == "prefill":
            cells[0] = f"{r['op']} (prefill)"
        if r.get("status") != "ok":
            cells += [
                f"[red]{r.get('status')}[/red]",
                "",
                "",
                "",
                "",
                "",
                (r.get("error") or "")[:40],
            ]
        else:
            p10, p90 = r.get("latency_us_p10"), r.get("latency_us_p90")
            cells += [
                fmt_us(r.get("latency_us_median")),
                f"{fmt_us(p10)}-{fmt_us(p90)}" if p10 is not None else "-",
                f"{100 * r['latency_cv']:.1f}%" if r.get("latency_cv") is not None else "-",
                fmt_us(r.get("roofline_us")),
                f"{r['achieved_gbps']:,.1f}" if r.get("achieved_gbps") is not None else "-",
                f"{r['pct_of_roofline']:.0f}%" if r.get("pct_of_roofline") is not None else "-",
                r.get("flags") or "",
            ]
        table.add_row(*cells)
    return table


def compare_tables(report: Any) -> None:
    """Per-model estimate vs measurement, then the summary statistics."""
    table = Table(
        title=f"LUT sum vs end to end — {report.device_name}, {report.dtype}, "
        f"{report.mode}, batch {report.batch}"
    )
    for header in (
        "model",
        "ops",
        "width",
        "context",
        "LUT estimate",
        "measured",
        "p10-p90",
        "error",
    ):
        table.add_column(header, justify="left" if header == "model" else "right")
    for p in report.points:
        err = p.error_pct
        colour = "green" if abs(err) <= 5 else "yellow" if abs(err) <= 10 else "red"
        table.add_row(
            p.model,
            str(p.operators),
            str(p.width),
            str(p.context),
            fmt_us(p.estimate_us),
            fmt_us(p.measured_us),
            f"{fmt_us(p.measured_p10_us)}-{fmt_us(p.measured_p90_us)}",
            f"[{colour}]{err:+.1f}%[/{colour}]",
        )
    console.print(table)
    summary = report.summary()
    stats = Table(title="summary")
    stats.add_column("set")
    for header in (
        "n",
        "mean |err|",
        "median |err|",
        "worst",
        "within ±5%",
        "within ±10%",
        "Kendall τ",
        "Spearman ρ",
    ):
        stats.add_column(header, justify="right")
    for name, s in summary.items():
        stats.add_row(
            name,
            str(s["n"]),
            f"{s['mean_abs_error_pct']:.1f}%",
            f"{s['median_abs_error_pct']:.1f}%",
            f"{s['worst_error_pct']:+.1f}%",
            f"{100 * s['within_5pct']:.0f}%",
            f"{100 * s['within_10pct']:.0f}%",
            f"{s['kendall_tau']:.3f}",
            f"{s['spearman_rho']:.3f}",
        )
    console.print(stats)
    for g in report.generations:
        err = 100 * (g.estimate_s - g.measured_s) / g.measured_s
        console.print(
            f"generation {g.model}: {g.generate} tokens after {g.prompt}: "
            f"LUT {g.estimate_s:.3f} s, measured {g.measured_s:.3f} s ({err:+.1f}%)"
        )
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
