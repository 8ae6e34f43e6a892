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
from latprof.cli.fleet import (
    Fleet,
    GpusOpt,
    ProgressFileOpt,
    RayOpt,
    ShardOpt,
    ShardsOpt,
    WorkersOpt,
)
from latprof.errors import InputError
from latprof.settings import parse_counts, parse_names, resolve_device

EXAMPLES = """
Examples:

  latprof sweep --spec luts/quick.yaml --out luts/my-cpu.csv

  latprof sweep --device cpu --ops attention,ffn,mamba2 --widths 256,512 --batch 1
  --context 128,1024 --out X.csv

  latprof sweep --op-spec 'ffn(width=2048,ffn_dim=6144,activation=swiglu)' --batch 1,8 --out X.csv

  latprof sweep --spec luts/default.yaml --gpus all --out luts/h100.csv

  latprof sweep --spec luts/default.yaml --shard 3/8 --out shards/shard-3.csv
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def sweep(
    ctx: typer.Context,
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
    shard: ShardOpt = None,
    gpus: GpusOpt = None,
    workers: WorkersOpt = None,
    ray: RayOpt = None,
    shards: ShardsOpt = None,
    progress_file: ProgressFileOpt = None,
    retry_oom: Annotated[
        bool,
        typer.Option("--retry-oom", help="Measure again points the LUT holds as oom."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure operator decode steps on this device; rows are appended to --out as measured.

    A re-run of the same command measures only what is missing.  --shard, --gpus, --workers
    and --ray split the grid (README, "Sweeping a fleet")."""
    from latprof import grid

    fleet = Fleet(shard, gpus, workers, ray, shards, progress_file, ctx)
    fleet.check()

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
    run(
        request,
        out,
        threads=threads,
        samples=samples,
        as_json=as_json,
        fleet=fleet,
        retry_oom=retry_oom,
    )


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
    fleet: Fleet | None = None,
    retry_oom: bool = False,
) -> None:
    from latprof import shard as sharding
    from latprof.cli.fleet import run_fleet
    from latprof.grid import expand
    from latprof.registry import operator
    from latprof.report import progress_bar, sweep_summary_table
    from latprof.sweep import run_sweep
    from latprof.timing import TimerConfig
    from latprof.workers import pinning

    for op in request.ops:
        operator(op)  # unknown operator -> InputError listing the valid ones
    points = expand(request)
    command = shlex.join(["latprof", *sys.argv[1:]])
    config = TimerConfig.for_device(request.settings.device)
    if samples:
        config.samples = samples
    fleet = fleet or Fleet()
    if run_fleet(
        request, out, fleet, threads=threads, config=config, points=points, as_json=as_json
    ):
        return
    run_info = None
    if fleet.shard is not None:
        part = sharding.Shard.parse(fleet.shard)
        run_info = {"shard": sharding.provenance(points, part), "pinning": pinning()}
        points = sharding.select(points, part)
        if not points:  # more shards than points: this one has nothing to do
            empty = {"lut_path": str(out), "shard": fleet.shard, "points_total": 0, "measured": 0}
            if as_json:
                print_json(empty)
            else:
                print(f"shard {part} of this grid has no points")
            return
    with progress_bar(enabled=not as_json) as on_progress:
        summary = run_sweep(
            points,
            out,
            threads=threads,
            config=config,
            on_progress=_progress_to_file(fleet.progress_file, on_progress),
            command=command,
            run_info=run_info,
            retry_oom=retry_oom,
        )
    if as_json:
        print_json(summary.as_dict())
    else:
        sweep_summary_table(summary)


def _progress_to_file(path: Path | None, on_progress):
    """A worker (`latprof.workers`) also reports its progress to the parent through a file."""
    if path is None:
        return on_progress
    from latprof.workers import write_progress

    def update(done: int, total: int, label: str) -> None:
        write_progress(path, done, total)
        on_progress(done, total, label)

    return update
