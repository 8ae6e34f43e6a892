"""Human output: rich tables and progress bars (JSON output is built by the commands)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
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
    # no auto-refresh thread: on a small CPU a thread waking ten times a second to redraw steals
    # the cores being timed (it made 59 of 68 quick-sweep rows noisy); redraw on updates only
    progress = Progress(
        *columns, console=err_console, transient=not sys.stderr.isatty(), auto_refresh=False
    )
    with progress:
        task = progress.add_task("sweep", total=None)

        def update(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, description=label)
            progress.refresh()

        yield update


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e4:
        return f"{value / 1e3:,.1f} ms"
    return f"{value:,.1f} µs"


def sweep_summary_table(summary: Any) -> None:
    table = Table(title=f"sweep -> {summary.lut_path}", show_header=False)
    for key, value in summary.as_dict().items():
        if key == "error_messages":
            continue
        table.add_row(key, escape(str(value)))
    console.print(table)
    for message in summary.error_messages[:10]:
        err_console.print(f"[red]error[/red] {escape(message)}")


LUT_COLUMNS = (
    ("op", "op"),
    ("width", "width"),
    ("batch", "batch"),
    ("context", "context"),
    ("backend", "backend"),
    ("mode", "mode"),
    ("dtype", "dtype"),
)


def lut_table(
    rows: list[dict[str, Any]], title: str, problems: dict[int, str] | None = None
) -> Table:
    """LUT rows with latency, spread, achieved GB/s and percent of the bandwidth floor.
    `problems`: id(row) -> why it failed validation; such a row is marked INVALID in red."""
    problems = problems or {}
    table = Table(title=escape(title))
    for _, header in LUT_COLUMNS:
        table.add_column(
            header, justify="right" if header in ("width", "batch", "context") else "left"
        )
    for header in ("median", "p10-p90", "cv", "floor", "GB/s", "% floor", "flags"):
        table.add_column(header, justify="right")
    for r in rows:
        cells = [escape(str(r.get(k) if r.get(k) is not None else "-")) for k, _ in LUT_COLUMNS]
        if r.get("context") == 0 and r.get("phase") == "decode":
            cells[3] = "any"
        if r.get("phase") == "prefill":
            cells[0] = f"{r['op']} (prefill)"
        if id(r) in problems:
            cells += ["[red]INVALID[/red]", "", "", "", "", "", escape(problems[id(r)][:60])]
        elif r.get("status") != "ok":
            cells += [
                f"[red]{escape(str(r.get('status')))}[/red]",
                "",
                "",
                "",
                "",
                "",
                escape((r.get("error") or "")[:40]),
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
                escape(r.get("flags") or ""),
            ]
        table.add_row(*cells)
    return table


def _coloured_pct(err: float | None) -> str:
    if err is None:
        return "-"
    colour = "green" if abs(err) <= 5 else "yellow" if abs(err) <= 10 else "red"
    return f"[{colour}]{err:+.1f}%[/{colour}]"


def compare_tables(report: Any) -> None:
    """Per-model estimate vs measurement, then the summary statistics."""
    table = Table(
        title=f"LUT sum vs end to end — {report.device_name}, {report.dtype}, "
        f"{report.mode}, batch {report.batch}"
    )
    control = any(p.same_session_estimate_us is not None for p in report.points)
    headers = ["model", "ops", "width", "context", "LUT estimate", "measured", "p10-p90", "error"]
    if control:
        headers += ["same-session sum", "error "]
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for p in report.points:
        cells = [
            escape(p.model),
            str(p.operators),
            str(p.width),
            str(p.context),
            fmt_us(p.estimate_us),
            fmt_us(p.measured_us),
            f"{fmt_us(p.measured_p10_us)}-{fmt_us(p.measured_p90_us)}",
            _coloured_pct(p.error_pct),
        ]
        if control:
            cells += [fmt_us(p.same_session_estimate_us), _coloured_pct(p.same_session_error_pct)]
        table.add_row(*cells)
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
        "flipped pairs (widest gap)",
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
            f"{s['discordant_pairs']}/{s['pairs']} ({s['max_discordant_gap_pct']:.1f}%)",
        )
    console.print(stats)
    for g in report.generations:
        err = 100 * (g.estimate_s - g.measured_s) / g.measured_s
        console.print(
            f"generation {escape(g.model)}: {g.generate} tokens after {g.prompt}: "
            f"LUT {g.estimate_s:.3f} s, measured {g.measured_s:.3f} s ({err:+.1f}%)"
        )
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/dim]")


# ---- `latprof estimate` --------------------------------------------------------------------------
def _estimate_us(value: float | None) -> str:
    """µs, ms or s, whichever reads best (estimates run to seconds; `fmt_us` stops at ms)."""
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:,.3f} s"
    return f"{value / 1e3:,.2f} ms" if value >= 1e4 else f"{value:,.1f} µs"


def _estimate_bytes(value: int | None) -> str:
    """Decimal units (GB = 1e9 bytes), as `--device-memory` takes them."""
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value} B"


def _estimate_short_spec(key: str) -> str:
    """`attention(width=2048,heads=16,...)` -> `heads=16,...` (op and width have columns)."""
    inner = key.split("(", 1)[1].rstrip(")")
    return ", ".join(p for p in inner.split(",") if not p.startswith("width="))


def print_estimate(doc: dict) -> None:
    """`latprof estimate` as rich tables, drawn from its `--json` document (one source of truth
    for both outputs)."""
    from rich.markup import escape

    term = console
    m, q = doc["model"], doc["query"]
    term.print(
        f"[bold]{m['name']}[/]: {m['layers']} layers ({m['summary']}), width {m['width']}, "
        f"vocab {m['vocab_size']:,}, {m['params'] / 1e6:,.1f} M params"
        + (f", {m['meta_tokens']} meta tokens" if m["meta_tokens"] else "")
    )
    if doc["lut"]:
        lut = doc["lut"]
        bw = f", floor at {lut['bandwidth_gbps']} GB/s" if lut["bandwidth_gbps"] else ""
        term.print(
            f"LUT {lut['path']}: {lut['device_name'] or lut['device']}, {lut['dtype']}, "
            f"{lut['mode']}{bw}"
        )
    if doc["layers"]:
        first, last = q["first_context"], q["last_context"]
        table = Table(title=f"Decode step, batch {q['batch']}, context {first} -> {last}")
        for name, justify in (
            ("op", "left"),
            ("spec", "left"),
            ("count", "right"),
            ("backend", "left"),
            (f"µs @{first}", "right"),
            (f"µs @{last}", "right"),
            ("share", "right"),
            ("floor µs", "right"),
            ("how", "left"),
        ):
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for r in doc["layers"]:
            how = r["interpolation"] + (" [red]EXTRAPOLATED[/]" if r["extrapolated"] else "")
            floor = "-" if r["roofline_us_last"] is None else f"{r['roofline_us_last']:,.1f}"
            table.add_row(
                r["op"],
                _estimate_short_spec(r["spec"]),
                str(r["count"]),
                r["backend"],
                f"{r['latency_us_first']:,.1f}",
                f"{r['latency_us_last']:,.1f}",
                f"{100 * r['share_of_step']:.1f}%",
                floor,
                how,
            )
        term.print(table)
        _print_estimate_totals(term, doc)
    _print_estimate_memory(term, doc)
    for note in doc["notes"]:
        term.print(f"[yellow]note[/]: {escape(note)}")


def _print_estimate_totals(term: Console, doc: dict) -> None:
    t, q = doc["totals"], doc["query"]
    table = Table(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    floor = t["roofline_step_us_last"]
    rows = [
        (f"step latency @ context {q['first_context']}", _estimate_us(t["step_us_first"])),
        (
            f"step latency @ context {q['last_context']}",
            _estimate_us(t["step_us_last"]) + (f"  (floor {_estimate_us(floor)})" if floor else ""),
        ),
        (f"decode {q['generate']} tokens", _estimate_us(t["decode_us"])),
        (
            f"prefill {q['prompt']} tokens",
            _estimate_us(t["prefill_us"])
            + (f"  ({t['prefill_note']})" if t["prefill_note"] else ""),
        ),
        ("tokens/s (decode)", f"{t['tokens_per_s']:,.1f}"),
    ]
    for row in rows:
        table.add_row(*row)
    term.print(table)
    for key, label in (("interpolated", "interpolated"), ("extrapolated", "EXTRAPOLATED")):
        if doc[key]:
            term.print(f"{label}: " + "; ".join(doc[key]), markup=False)


def _print_estimate_memory(term: Console, doc: dict) -> None:
    mem = doc["memory"]
    meta = f" + {mem['meta_tokens']} meta" if mem["meta_tokens"] else ""
    title = f"Memory: {mem['dtype']}, batch {mem['batch']}, {mem['context']:,}{meta} tokens"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    for key, label in (
        ("weights_bytes", "weights"),
        ("kv_cache_bytes", "KV cache"),
        ("recurrent_state_bytes", "recurrent state"),
        ("conv_state_bytes", "conv state"),
        ("total_bytes", "total"),
    ):
        table.add_row(label, f"{mem[key]:,}", _estimate_bytes(mem[key]))
    term.print(table)
    fit = doc["max_batch"]
    if fit:
        line = (
            f"largest batch in {_estimate_bytes(fit['device_memory_bytes'])}: {fit['max_batch']:,} "
            f"({_estimate_bytes(fit['bytes_per_sequence'])} per sequence)"
        )
        if fit["tokens_per_s"] is not None:
            line += f", {fit['tokens_per_s']:,.0f} tokens/s"
        if fit["throughput_note"]:
            line += f" ({fit['throughput_note']})"
        term.print(line, markup=False)


def print_frontier(result: Any) -> None:
    """`latprof frontier`: the budget table in the paper's form, then the best depth per budget."""
    from rich.markup import escape

    by_loss = result.score != "params"
    depths = sorted(result.depths)
    title = (
        f"{result.family} frontier: batch {result.batch}, {result.generate} tokens after "
        f"{result.prompt}, LUT {escape(result.lut)} ({escape(str(result.device_name))})"
    )
    table = Table(title=title)
    table.add_column("budget (s)", justify="right")
    for d in depths:
        table.add_column(f"depth {d}: width", justify="right")
        table.add_column("params (B)" + (" / loss" if by_loss else ""), justify="right")
    if len(depths) > 1:
        table.add_column(f"ratio d{depths[0]}/d{depths[-1]}", justify="right")
    table.add_column("best depth", justify="right")
    for row in result.budgets:
        cells = [f"{row.budget_s:.4g}"]
        for d in depths:
            p = row.best_per_depth[d]
            if p is None:
                cells += ["-", "-"]
                continue
            flag = "*" if p.status == "extrapolated" else ""
            size = f"{p.params / 1e9:.3f}" + (f" / {p.loss:.4f}" if by_loss else "")
            cells += [f"{p.width}{flag}", size]
        if len(depths) > 1:
            cells.append(f"{row.ratio:.2f}x" if row.ratio else "-")
        cells.append(str(row.best_depth) if row.best_depth is not None else "-")
        table.add_row(*cells)
    console.print(table)
    console.print(f"score: {escape(result.score)}; * = extrapolated width")
    for note in result.notes:
        console.print(f"note: {escape(note)}")


def print_decode(doc: dict) -> None:
    """`latprof decode` as a table, drawn from its `--json` document."""
    from rich.markup import escape

    table = Table(
        title=f"decode on {escape(doc['device_name'])} ({doc['device']}, {doc['dtype']}): batch "
        f"{doc['batch']}, {doc['generate']} tokens after a {doc['prompt']}-token prompt; floor at "
        f"{doc['bandwidth_gbps']} GB/s"
    )
    for col in (
        "model",
        "mode",
        "params",
        "prefill",
        "decode",
        "tokens/s",
        "step first",
        "step last",
        "% floor (last)",
    ):
        table.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for m in doc["models"]:
        for mode, r in m["results"].items():
            table.add_row(
                escape(m["model"]),
                mode,
                f"{m['params'] / 1e6:,.1f} M",
                f"{r['prefill_s']:.3f} s",
                f"{r['decode_s']:.3f} s",
                f"{r['tokens_per_s']:,.1f}",
                fmt_us(r["step_us_first"]),
                fmt_us(r["step_us_last"]),
                f"{r['pct_of_roofline_last']:.0f}%",
            )
    console.print(table)
    for m in doc["models"]:
        if "eager_over_graph" in m:
            console.print(f"{escape(m['model'])}: eager / graph = {m['eager_over_graph']:.2f}x")
    for note in doc["notes"]:
        console.print(f"note: {escape(note)}")


def print_search(result: Any, out: Any) -> None:
    """`latprof search`: the Pareto front and what was rejected, and why."""
    from rich.markup import escape

    direction = "lower" if result.minimize else "higher"
    table = Table(
        title=f"search {escape(result.space)}: Pareto front within {result.budget_s:g} s "
        f"(score {escape(result.score)}, {direction} is better)"
    )
    for col in ("latency (s)", "score", "params (M)", "operators", "width", "candidate"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for c in result.front:
        table.add_row(
            f"{c.latency_s:.4g}",
            f"{c.score:.6g}",
            f"{c.params / 1e6:,.1f}",
            str(c.operators),
            str(c.genome.width),
            escape(c.key),
        )
    console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))
    console.print(f"{result.evaluated} distinct candidates: {counts}")
    if result.resumed:
        console.print(f"resumed: {result.resumed} score result(s) taken from the journal")
    if out is not None:
        console.print(f"written to {escape(str(out))}: front.csv, front.png, summary.json, top/")
