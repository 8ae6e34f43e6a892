"""`latprof estimate CONFIG --lut LUT`: whole-model decode latency, memory and throughput.

Import-light on purpose (no torch, no pandas): one call finishes in well under a second."""

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
from latprof.settings import parse_count

EXAMPLES = """Examples:

  latprof estimate configs/nemotron-flash-1b.yaml --lut luts/cpu.csv --prompt 1024 --generate 8000

  latprof estimate llama/config.json --lut luts/h100.csv --backend attention=triton --json

  latprof estimate configs/mamba2-500m.yaml --memory-only --batch 1 --context 8000 --dtype bf16

  latprof estimate configs/attention-500m.yaml --lut luts/h100.csv --device-memory 80
"""


@app.command(epilog=EXAMPLES)
@handles_input_errors
def estimate(
    config: Annotated[Path, typer.Argument(help="latprof YAML model config or HF config.json.")],
    lut: Annotated[Path | None, typer.Option("--lut", help="LUT CSV from `latprof sweep`.")] = None,
    batch: OneBatchOpt = "1",
    prompt: PromptOpt = "1024",
    generate: GenerateOpt = "128",
    context: Annotated[
        str | None, typer.Option("--context", help="Memory: tokens in the cache [P + T].")
    ] = None,
    dtype: LutDtypeOpt = None,
    device: LutDeviceOpt = "auto",
    mode: LutModeOpt = None,
    backend: LutBackendOpt = None,
    allow_extrapolation: ExtrapolateOpt = False,
    force: ForceOpt = False,
    measure_missing: Annotated[
        bool, typer.Option("--measure-missing", help="Measure specs the LUT lacks, append them.")
    ] = False,
    memory_only: Annotated[
        bool, typer.Option("--memory-only", help="Weights and caches only; no LUT needed.")
    ] = False,
    device_memory: Annotated[
        float | None,
        typer.Option(
            "--device-memory",
            help="Device memory in GB (1e9 bytes): adds the largest batch that fits.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate decode latency, memory and throughput of a model from a LUT."""
    from latprof import inputs
    from latprof.estimate import EstimateRequest, run_estimate

    settings = lut_settings(device=device, dtype=dtype, mode=mode, batch=batch, backend=backend)
    if device_memory is not None:
        inputs.bounded_float(device_memory, "--device-memory", 0.0, inputs.MAX_DEVICE_MEMORY_GB)
    if measure_missing and lut is not None:
        check_lut_output(lut)
    request = EstimateRequest(
        config=config,
        lut=lut,
        settings=settings,
        prompt=parse_count(prompt, "prompt", 0),
        generate=parse_count(generate, "generate", 1),
        context=None if context is None else parse_count(context, "context", 0),
        allow_extrapolation=allow_extrapolation,
        force=force,
        measure_missing=measure_missing,
        memory_only=memory_only,
        device_memory_gb=device_memory,
    )
    doc = run_estimate(request, measure=_measure_missing).as_json()
    if as_json:
        print_json(doc)
    else:
        from latprof.report import print_estimate  # rich: only for human output

        print_estimate(doc)


def _measure_missing(points, lut_path: Path) -> dict:
    """`--measure-missing`: the sweep measures the points the estimate lacks (imports torch)."""
    from latprof.sweep import run_sweep

    return run_sweep(points, lut_path, command="latprof estimate --measure-missing").as_dict()
