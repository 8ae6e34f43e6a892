"""`latprof estimate CONFIG --lut LUT`: whole-model decode latency, memory and throughput.

Import-light on purpose (no torch, no pandas): one call finishes in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import JsonOpt, handles_input_errors, print_json
from latprof.settings import Settings, parse_count

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
    batch: Annotated[str, typer.Option("--batch", help="Sequences decoded together (one).")] = "1",
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt tokens (P).")] = "1024",
    generate: Annotated[str, typer.Option("--generate", help="Tokens generated (T).")] = "128",
    context: Annotated[
        str | None, typer.Option("--context", help="Memory: tokens in the cache [P + T].")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32 | bf16 | fp16 [the LUT's].")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="auto | cpu | cuda | a device name; a LUT from another device is refused "
            "unless --force.",
        ),
    ] = "auto",
    mode: Annotated[str | None, typer.Option("--mode", help="graph | eager [the LUT's].")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="NAME for every operator that has it, or op=NAME,... (required where the LUT "
            "has several).",
        ),
    ] = None,
    allow_extrapolation: Annotated[
        bool,
        typer.Option(
            "--allow-extrapolation",
            help="Accept values outside the measured contexts / widths (flagged).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Use a LUT of another dtype / device / mode / backend.")
    ] = False,
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
    from latprof.estimate import EstimateRequest, run_estimate

    settings = Settings.resolve(
        device=device,
        dtype=dtype,
        mode=mode,
        batch=batch,
        backend=backend,
        measure=False,
        one_batch=True,
    )
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
