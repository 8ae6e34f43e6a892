"""`latprof decode`: whole generations the paper's way, prefill then one step per token."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import (
    BackendOpt,
    DeviceChoice,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    handles_input_errors,
    print_json,
)

EXAMPLES = """Examples:

  latprof decode configs/nemotron-flash-1b.yaml --prompt 128 --generate 64 --device cpu

  latprof decode ../shared/fixtures/hf-configs/qwen3-0.6b.json --prompt 128 --generate 8000
  --mode both --backend attention=triton --json
"""


class DecodeMode(str, Enum):
    graph = "graph"
    eager = "eager"
    both = "both"


@app.command(epilog=EXAMPLES)
@handles_input_errors
def decode(
    configs: Annotated[list[Path], typer.Argument(help="Model configs (latprof YAML or HF json).")],
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt tokens (P).")] = "128",
    generate: Annotated[str, typer.Option("--generate", help="Tokens generated (T).")] = "256",
    batch: Annotated[str, typer.Option("--batch", help="Sequences decoded together (one).")] = "1",
    mode: Annotated[
        DecodeMode | None,
        typer.Option("--mode", help="graph | eager | both (default: graph on cuda, eager on cpu)."),
    ] = None,
    device: DeviceOpt = DeviceChoice.auto,
    dtype: DtypeOpt = None,
    backend: BackendOpt = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (fixed).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prefill, then decode T tokens per model: prefill time, decode time, tokens/s, step latency
    along the generation and its roofline."""
    from latprof import inputs
    from latprof.decode_run import run_decode
    from latprof.settings import Settings, parse_count

    inputs.threads(threads)
    modes = (
        None if mode is None else (("graph", "eager") if mode.value == "both" else (mode.value,))
    )
    settings = Settings.resolve(
        device=device.value,
        dtype=dtype,
        mode=modes[0] if modes else None,
        batch=batch,
        backend=backend,
        one_batch=True,
    )
    modes = modes or (settings.mode,)
    for m in modes:  # graph on a CPU: the resolver's own message
        Settings.resolve(device=settings.device, mode=m)
    doc = run_decode(
        configs,
        settings,
        prompt=parse_count(prompt, "prompt", 0),
        generate=parse_count(generate, "generate", 1),
        modes=modes,
        threads=threads,
        progress=not as_json,
    )
    if as_json:
        print_json(doc)
    else:
        from latprof.report import print_decode

        print_decode(doc)
