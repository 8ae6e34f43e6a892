"""`latprof sweep`: measure operators on this device and append rows to a LUT."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import (
    DeviceChoice,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModeChoice,
    handles_input_errors,
    parse_int_list,
    parse_str_list,
    print_json,
)
from latprof.errors import InputError

EXAMPLES = """
Examples:

  latprof sweep --spec luts/quick.yaml --out luts/my-cpu.csv

  latprof sweep --device cpu --ops attention,ffn,mamba2 --widths 256,512 --batch 1
  --context 128,1024 --out X.csv

  latprof sweep --op-spec 'ffn(width=2048,ffn_dim=6144,activation=swiglu)' --batch 1,8 --out X.csv
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def sweep(
    out: Annotated[Path, typer.Option("--out", help="LUT CSV to append to (created if absent).")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Sweep spec YAML (luts/*.yaml).")
    ] = None,
    ops: Annotated[str | None, typer.Option("--ops", help="Comma list of operators.")] = None,
    op_spec: Annotated[
        list[str] | None,
        typer.Option("--op-spec", help="Exact operator spec key (repeatable), as in LUT 'spec'."),
    ] = None,
    widths: Annotated[str, typer.Option("--widths", help="Comma list of widths.")] = "1024",
    batch: Annotated[str, typer.Option("--batch", help="Comma list of batch sizes.")] = "1",
    context: Annotated[
        str, typer.Option("--context", help="Comma list of contexts (8k = 8192).")
    ] = "1024",
    phase: Annotated[str, typer.Option("--phase", help="decode and/or prefill.")] = "decode",
    dtype: DtypeOpt = None,
    device: DeviceOpt = DeviceChoice.auto,
    backend: Annotated[
        str,
        typer.Option("--backend", help="Backends: names, or op=name pairs (torch,attention=sdpa)."),
    ] = "torch",
    mode: Annotated[ModeChoice | None, typer.Option("--mode", help="graph | eager (cuda).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (fixed).")] = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="Timed samples per row (default 15 cpu, 30 cuda)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure operator decode steps on this device; rows are appended to --out as measured.

    A re-run of the same command measures only what is missing."""
    from latprof import device_info, grid

    if spec is None and ops is None and not op_spec:
        raise InputError("say what to measure: --spec FILE, --ops LIST or --op-spec KEY")
    if threads is not None and threads <= 0:
        raise InputError(f"--threads must be positive, got {threads}")
    if samples is not None and samples < 3:
        raise InputError(f"--samples must be at least 3 (for p10/p90), got {samples}")
    dev = device_info.resolve_device(device.value)
    mode_name = mode.value if mode else None
    if spec is not None:
        request = grid.request_from_file(
            grid.load_spec_file(spec), device=dev, dtype=dtype, mode=mode_name, path=str(spec)
        )
    else:
        request = grid.GridRequest(
            ops=tuple(parse_str_list(ops or "")),
            widths=tuple(parse_int_list(widths, "widths")),
            batch=tuple(parse_int_list(batch, "batch")),
            context=tuple(parse_int_list(context, "context")),
            dtype=grid.canonical_dtype(dtype or grid.default_dtype_name(dev)),
            device=dev,
            mode=grid.resolve_mode(mode_name, dev),
            backends=tuple(parse_str_list(backend)),
            phases=tuple(_phases(phase)),
            op_specs=tuple(op_spec or ()),
        )
    run(request, out, threads=threads, samples=samples, as_json=as_json)


def _phases(text: str) -> list[str]:
    from latprof.grid import PHASES

    phases = parse_str_list(text)
    for p in phases:
        if p not in PHASES:
            raise InputError(f"--phase: unknown phase {p!r}; valid: {', '.join(PHASES)}")
    return phases


def run(request, out: Path, *, threads: int | None, samples: int | None, as_json: bool) -> None:
    from latprof.grid import expand
    from latprof.ops import backends_of, block_class
    from latprof.report import progress_bar, sweep_summary_table
    from latprof.sweep import run_sweep
    from latprof.timing import TimerConfig

    for op in request.ops:
        block_class(op)  # unknown operator -> InputError listing the valid ones
    points = expand(request, backends_of)
    command = shlex.join(["latprof", *sys.argv[1:]])
    config = TimerConfig.for_device(request.device)
    if samples:
        config.samples = samples
    with progress_bar(enabled=not as_json) as on_progress:
        summary = run_sweep(
            points, out, threads=threads, config=config, on_progress=on_progress, command=command
        )
    if as_json:
        print_json(summary.as_dict())
    else:
        sweep_summary_table(summary)
