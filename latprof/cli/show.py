"""`latprof show LUT`: a LUT as a table with achieved bandwidth and percent of the floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import JsonOpt, handles_input_errors, print_json
from latprof.settings import parse_counts, parse_names


@app.command(epilog="Example: latprof show luts/local-quick.csv --ops attention --batch 1")
@handles_input_errors
def show(
    lut_path: Annotated[Path, typer.Argument(help="LUT CSV written by `latprof sweep`.")],
    ops: Annotated[str | None, typer.Option("--ops", help="Only these operators.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Only these batch sizes.")] = None,
    context: Annotated[str | None, typer.Option("--context", help="Only these contexts.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a LUT, filterable by operator, batch and context."""
    from latprof.lut import ANY_CONTEXT, LUT
    from latprof.registry import spec_class
    from latprof.report import console, lut_table

    table = LUT.load(lut_path, strict=False)  # invalid rows are shown, marked
    by_id = {id(r): line for r, line in zip(table.rows, table.lines, strict=True)}
    rows = table.rows
    if ops:
        wanted = parse_names(ops)
        for op in wanted:
            spec_class(op)
        rows = [r for r in rows if r["op"] in wanted]
    if batch:
        rows = [r for r in rows if r["batch"] in parse_counts(batch, "batch")]
    if context:
        keep = set(parse_counts(context, "context")) | {ANY_CONTEXT}
        rows = [r for r in rows if r["context"] in keep]
    rows = sorted(
        rows,
        key=lambda r: (
            r["op"],
            r["phase"],
            r["width"],
            r["spec"],
            r["batch"],
            r["context"],
            r["backend"],
            r["mode"],
        ),
    )
    problems = {id(r): table.problems[by_id[id(r)]] for r in rows if by_id[id(r)] in table.problems}
    if as_json:
        marked = [
            {**r, "line": by_id[id(r)], "problem": problems.get(id(r))} if problems else r
            for r in rows
        ]
        doc = {"lut": str(lut_path), "provenance": table.provenance, "rows": marked}
        if table.problems:
            doc["problems"] = {str(k): v for k, v in sorted(table.problems.items())}
        print_json(doc)
        return
    prov = table.provenance
    device, gbps = prov.get("device_name", "?"), prov.get("bandwidth_gbps", "?")
    title = f"{lut_path} — {device}, bandwidth floor at {gbps} GB/s"
    console.print(lut_table(rows, title, problems))
    if table.problems:
        from rich.markup import escape

        console.print(
            f"[red]{len(table.problems)} row(s) failed validation[/red] (estimates refuse this "
            "LUT until they are fixed or deleted):"
        )
        for line, problem in sorted(table.problems.items()):
            console.print(f"  line {line}: {escape(problem)}")
