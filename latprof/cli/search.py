"""`latprof search`: evolutionary search over hybrid operator mixes under a latency budget."""

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
    handles_input_errors,
    lut_settings,
    print_json,
)

EXAMPLES = """Examples:

  latprof search configs/search/small-cpu.yaml --lut luts/cpu.csv --budget-s 3 --generations 20
  --seed 0 --out s/

  latprof search configs/search/nemotron-flash-paper.yaml --lut luts/h100.csv --budget-s 18.3
  --prompt 0 --generate 8000 --score cmd:"python train_proxy.py" --minimize --jobs 4 --out s/
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def search(
    space: Annotated[Path, typer.Argument(help="Search space YAML (configs/search/).")],
    lut: Annotated[Path, typer.Option("--lut", help="LUT CSV from `latprof sweep`.")],
    budget_ms: Annotated[
        float | None, typer.Option("--budget-ms", help="Decode latency budget, milliseconds.")
    ] = None,
    budget_s: Annotated[
        float | None, typer.Option("--budget-s", help="Decode latency budget, seconds.")
    ] = None,
    batch: OneBatchOpt = "1",
    prompt: PromptOpt = "128",
    generate: GenerateOpt = "128",
    score: Annotated[
        str,
        typer.Option("--score", help='params | python:module:function | cmd:"COMMAND".'),
    ] = "params",
    minimize: Annotated[
        bool, typer.Option("--minimize", help="Lower scores are better (e.g. perplexity).")
    ] = False,
    score_timeout: Annotated[
        float, typer.Option("--score-timeout", help="Seconds a score command may take.")
    ] = 600.0,
    population: Annotated[int, typer.Option("--population", help="Population size.")] = 32,
    generations: Annotated[
        int, typer.Option("--generations", help="Children = generations x population.")
    ] = 20,
    tournament: Annotated[int, typer.Option("--tournament", help="Tournament size.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same search).")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", help="Score calls at a time.")] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder: journal (resume), front CSV / PNG, top configs."),
    ] = None,
    dtype: LutDtypeOpt = None,
    device: LutDeviceOpt = "auto",
    mode: LutModeOpt = None,
    backend: LutBackendOpt = None,
    allow_extrapolation: ExtrapolateOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Search the space for the best-scoring models within the latency budget."""
    from latprof import inputs
    from latprof import search as se
    from latprof.errors import InputError
    from latprof.estimate import Estimator
    from latprof.report import print_search, progress_bar
    from latprof.settings import parse_count

    if (budget_ms is None) == (budget_s is None):
        raise InputError("give the latency budget once: --budget-ms X or --budget-s X")
    budget = budget_s if budget_s is not None else budget_ms / 1e3
    for name, value, low in (("generations", generations, 1), ("jobs", jobs, 1)):
        if value < low or value > 100_000:
            raise InputError(f"--{name} must be between {low} and 100000, got {value}")
    if not 0 < score_timeout < 1e6:
        raise InputError(f"--score-timeout must be positive seconds, got {score_timeout}")
    settings = lut_settings(device=device, dtype=dtype, mode=mode, batch=batch, backend=backend)
    inputs.check_output_dir(out, "--out")
    space_spec = se.Space.load(space)
    scorer = se.Score(score, score_timeout)
    scorer.check()
    est = Estimator.for_settings(
        lut, settings, allow_extrapolation=allow_extrapolation, force=force
    )
    runner = se.Search(
        space_spec,
        est,
        budget_s=budget,
        batch=settings.batch_one,
        prompt=parse_count(prompt, "prompt", 0),
        generate=parse_count(generate, "generate", 1),
        score=scorer,
        minimize=minimize,
        population=population,
        tournament=tournament,
        seed=seed,
        jobs=jobs,
        out=out,
    )
    with progress_bar(enabled=not as_json) as on_progress:
        result = runner.run(generations, on_progress)
    if out is not None:
        se.write_outputs(result, runner, out)
    if as_json:
        print_json(result.as_json())
    else:
        print_search(result, out)
