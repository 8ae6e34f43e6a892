"""`latprof sweep`: measure operators on this device and append rows to a LUT."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from latprof import inputs
from latprof.cli import app
from latprof.cli.common import (
    BackendOpt,
    BatchOpt,
    ContextOpt,
    DeviceChoice,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModeOpt,
    check_lut_output,
    handles_input_errors,
    measure_settings,
    print_json,
)
from latprof.errors import InputError
from latprof.settings import parse_counts, parse_names, resolve_device

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
    batch: BatchOpt = "1",
    context: ContextOpt = "1024",
    phase: Annotated[str, typer.Option("--phase", help="decode and/or prefill.")] = "decode",
    dtype: DtypeOpt = None,
    device: DeviceOpt = DeviceChoice.auto,
    backend: BackendOpt = "torch",
    mode: ModeOpt = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (fixed).")] = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="Timed samples per row (default 21 cpu, 30 cuda)."),
    ] = None,
    retry_oom: Annotated[
        bool,
        typer.Option("--retry-oom", help="Measure again points the LUT holds as oom."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure operator decode steps on this device; rows are appended to --out as measured.

    A re-run of the same command measures only what is missing."""
    from latprof import grid

    if spec is None and ops is None and not op_spec:
        raise InputError("say what to measure: --spec FILE, --ops LIST or --op-spec KEY")
    inputs.threads(threads)
    inputs.samples(samples)
    check_lut_output(out)
    if spec is not None:
        request = grid.request_from_file(
            grid.load_spec_file(spec),
            device=resolve_device(device.value),
            dtype=dtype,
            mode=mode.value if mode else None,
            path=str(spec),
        )
    else:
        settings = measure_settings(
            device=device, dtype=dtype, mode=mode, batch=batch, context=context, backend=backend
        )
        request = grid.GridRequest(
            ops=parse_names(ops),
            widths=parse_counts(widths, "widths"),
            settings=settings,
            phases=_phases(phase),
            op_specs=tuple(op_spec or ()),
        )
    run(request, out, threads=threads, samples=samples, as_json=as_json, retry_oom=retry_oom)


def _phases(text: str) -> tuple[str, ...]:
    from latprof.grid import PHASES

    phases = parse_names(text)
    for p in phases:
        if p not in PHASES:
            raise InputError(f"--phase: unknown phase {p!r}; valid: {', '.join(PHASES)}")
    return phases


def run(
    request,
    out: Path,
    *,
    threads: int | None,
    samples: int | None,
    as_json: bool,
    retry_oom: bool = False,
) -> None:
    from latprof.grid import expand
    from latprof.registry import operator
    from latprof.report import progress_bar, sweep_summary_table
    from latprof.sweep import run_sweep
    from latprof.timing import TimerConfig

    for op in request.ops:
        operator(op)  # unknown operator -> InputError listing the valid ones
    points = expand(request)
    command = shlex.join(["latprof", *sys.argv[1:]])
    config = TimerConfig.for_device(request.settings.device)
    if samples:
        config.samples = samples
    with progress_bar(enabled=not as_json) as on_progress:
        summary = run_sweep(
            points,
            out,
            threads=threads,
            config=config,
            on_progress=on_progress,
            command=command,
            retry_oom=retry_oom,
        )
    if as_json:
        print_json(summary.as_dict())
    else:
        sweep_summary_table(summary)
