"""`latprof frontier`: the depth-width trade-off under latency budgets, from a LUT.

Import-light like `estimate` (no torch) unless --measure-missing has rows to measure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import (
    ExtrapolateOpt,
    ForceOpt,
    GenerateOpt,
    JsonOpt,
    LutBackendOpt,
    LutDeviceOpt,
    LutDtypeOpt,
    LutModeOpt,
    OneBatchOpt,
    PromptOpt,
    check_lut_output,
    handles_input_errors,
    lut_settings,
    print_json,
)

EXAMPLES = """Examples:

  latprof frontier --lut luts/cpu.csv --family llama --depths 12,24 --budgets auto --plot f.png

  latprof frontier --lut luts/h100.csv --family llama --depths 8,12,16,24 --widths 512:4096:128
  --budgets 2.5,5,10 --prompt 0 --generate 8000

  latprof frontier --lut luts/h100.csv --family configs/frontier/nemotron-flash-block.yaml
  --depths 2,3,4,6 --loss-model my-loss.yaml --json
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def frontier(
    lut: Annotated[Path, typer.Option("--lut", help="LUT CSV from `latprof sweep`.")],
    family: Annotated[
        str,
        typer.Option("--family", help="llama, or a YAML template with `width: free`, `block:`."),
    ] = "llama",
    depths: Annotated[str, typer.Option("--depths", help="Blocks per model, comma list.")] = (
        "12,24"
    ),
    widths: Annotated[
        str, typer.Option("--widths", help="start:stop:step (stop included) or a comma list.")
    ] = "512:4096:128",
    budgets: Annotated[
        str, typer.Option("--budgets", help="Latency budgets in seconds (2.5,5,10) or auto.")
    ] = "auto",
    batch: OneBatchOpt = "1",
    prompt: PromptOpt = "128",
    generate: GenerateOpt = "128",
    vocab: Annotated[
        int | None, typer.Option("--vocab", help="Vocabulary of the llama family [32000].")
    ] = None,
    dtype: LutDtypeOpt = None,
    device: LutDeviceOpt = "auto",
    mode: LutModeOpt = None,
    backend: LutBackendOpt = None,
    loss_model: Annotated[
        Path | None,
        typer.Option("--loss-model", help="YAML loss law in depth, width, params, tokens."),
    ] = None,
    allow_extrapolation: ExtrapolateOpt = False,
    force: ForceOpt = False,
    measure_missing: Annotated[
        bool, typer.Option("--measure-missing", help="Measure the rows the grid lacks, first.")
    ] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG.")] = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write each budget's chosen models as YAML configs here."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per depth, the widest model within each latency budget, and its parameters."""
    from latprof import frontier as fr
    from latprof import inputs
    from latprof.estimate import Estimator
    from latprof.settings import parse_count, parse_counts

    settings = lut_settings(device=device, dtype=dtype, mode=mode, batch=batch, backend=backend)
    inputs.check_plot_path(plot_path)
    inputs.check_output_dir(export, "--export")
    if measure_missing:
        check_lut_output(lut)
    fam = fr.load_family(family, vocab)
    loss = fr.LossModel.load(loss_model) if loss_model else None
    query = dict(
        batch=settings.batch_one,
        prompt=parse_count(prompt, "prompt", 0),
        generate=parse_count(generate, "generate", 1),
    )
    depth_list = parse_counts(depths, "depths") if depths.strip() else ()
    width_list, budget_list = fr.parse_widths(widths), fr.parse_budgets(budgets)

    def estimators() -> tuple[Estimator, Estimator | None]:
        strict = Estimator.for_settings(lut, settings, force=force)
        loose = Estimator.for_settings(strict.lut, settings, allow_extrapolation=True, force=force)
        return strict, (loose if allow_extrapolation else None)

    strict, loose = estimators()
    notes = []
    if measure_missing:
        missing: list = []
        fr.grid(fam, depth_list, width_list, strict, extrapolating=None, missing=missing, **query)
        if missing:
            from latprof.sweep import run_sweep  # imports torch: only when there is work

            points = strict.missing_points(missing)
            summary = run_sweep(points, lut, command="latprof frontier --measure-missing")
            notes.append(f"--measure-missing: {summary.measured} row(s) measured into {lut}")
            strict, loose = estimators()
    result = fr.frontier(
        fam,
        depth_list,
        width_list,
        strict,
        budgets=budget_list,
        extrapolating=loose,
        loss_model=loss,
        **query,
    )
    result.notes = notes + strict.notes + result.notes
    if plot_path is not None:
        fr.plot(result, plot_path)
    if export is not None:
        fr.export_models(result, fam, export)
    if as_json:
        print_json(result.as_json())
    else:
        from latprof.report import print_frontier

        print_frontier(result)
