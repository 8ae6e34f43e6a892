"""`latprof compare`: whole models end to end against the LUT sum."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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

EXAMPLES = """
Examples:

  latprof compare configs/compare-set/*.yaml --device cpu --lut luts/my-cpu.csv --measure-missing

  latprof compare configs/nemotron-flash-1b.yaml --lut luts/h100.csv --context 1024,8192
  --generate 8000 --plot compare.png
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def compare(
    configs: Annotated[list[Path], typer.Argument(help="Model configs (latprof YAML or HF json).")],
    lut: Annotated[Path, typer.Option("--lut", help="LUT CSV from `latprof sweep`.")],
    batch: BatchOpt = "1",
    context: ContextOpt = "1024",
    device: DeviceOpt = DeviceChoice.auto,
    dtype: DtypeOpt = None,
    mode: ModeOpt = None,
    backend: BackendOpt = None,
    generate: Annotated[
        int | None, typer.Option("--generate", help="Also compare T-token generations.")
    ] = None,
    prompt: Annotated[
        int | None, typer.Option("--prompt", help="Prompt length for --generate.")
    ] = None,
    measure_missing: Annotated[
        bool, typer.Option("--measure-missing", help="Measure LUT rows the models need first.")
    ] = False,
    allow_extrapolation: Annotated[bool, typer.Option("--allow-extrapolation")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use a LUT of another setting.")] = False,
    samples: Annotated[int | None, typer.Option("--samples", help="Timed samples.")] = None,
    same_session: Annotated[
        bool,
        typer.Option(
            "--same-session",
            help="Also time each model's LUT rows in the same rounds as the model (a control "
            "free of machine drift between the sweep and now).",
        ),
    ] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG scatter.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build whole models, time their decode steps end to end and compare with the LUT sum."""
    from latprof import inputs
    from latprof.compare import CompareRequest, plot, run_compare
    from latprof.report import compare_tables, progress_bar

    if generate is not None:
        inputs.bounded_int(generate, "--generate", 1, inputs.MAX_CONTEXT)
    if prompt is not None:
        inputs.bounded_int(prompt, "--prompt", 0, inputs.MAX_CONTEXT)
    inputs.samples(samples)
    inputs.check_plot_path(plot_path)
    if measure_missing:
        check_lut_output(lut)
    settings = measure_settings(
        device=device,
        dtype=dtype,
        mode=mode,
        batch=batch,
        context=context,
        backend=backend,
        one_batch=True,
    )
    request = CompareRequest(
        configs=tuple(configs),
        lut=lut,
        settings=settings,
        generate=generate,
        prompt=prompt,
        measure_missing=measure_missing,
        allow_extrapolation=allow_extrapolation,
        force=force,
        samples=samples,
        same_session=same_session,
    )
    with progress_bar(enabled=not as_json) as on_progress:
        report = run_compare(request, on_progress)
    if plot_path is not None:
        plot(report, plot_path)
    if as_json:
        print_json(report.as_json())
    else:
        compare_tables(report)
