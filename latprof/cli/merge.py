"""`latprof merge OUT IN...`: LUTs of one device (e.g. a sweep's shards) into one LUT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import JsonOpt, handles_input_errors, print_json

EXAMPLES = """
Examples:

  latprof merge luts/h100.csv shards/shard-*.csv

  latprof merge luts/all.csv luts/h100-a.csv luts/h100-b.csv --force
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def merge(
    out: Annotated[Path, typer.Argument(help="Merged LUT CSV (replaced atomically).")],
    inputs: Annotated[list[Path], typer.Argument(help="LUT CSVs to merge (OUT may be one).")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Merge LUTs of different devices, dtypes or versions anyway."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge LUTs of one device; a point in several inputs is kept once (the lower cv)."""
    from latprof.merge import merge_luts
    from latprof.report import console

    summary = merge_luts(inputs, out, force=force)
    if as_json:
        print_json(summary.as_dict())
        return
    console.print(
        f"{out}: {summary.rows_out} rows from {len(summary.inputs)} LUTs "
        f"({summary.rows_in} rows in, {summary.duplicates_dropped} duplicate points dropped, "
        "keeping the lower cv)"
    )
    for diff in summary.forced:
        console.print(f"[yellow]forced:[/] {diff}")
