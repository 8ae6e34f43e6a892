"""`latprof estimate CONFIG --lut LUT`: whole-model decode latency, memory and throughput.

Import-light on purpose (no torch, no pandas): one call finishes in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latprof.cli import app
from latprof.cli.common import JsonOpt, handles_input_errors, print_json
from latprof.errors import InputError

EXAMPLES = """Examples:

  latprof estimate configs/nemotron-flash-1b.yaml --lut luts/cpu.csv --prompt 1024 --generate 8000

  latprof estimate llama/config.json --lut luts/h100.csv --backend attention=triton --json

  latprof estimate configs/mamba2-500m.yaml --memory-only --batch 1 --context 8000 --dtype bf16

  latprof estimate configs/attention-500m.yaml --lut luts/h100.csv --device-memory 80
"""


def _count(text: str, name: str, minimum: int) -> int:
    """One integer, `k` suffix allowed (8k = 8192)."""
    item = text.strip().lower()
    try:
        value = int(item[:-1]) * 1024 if item.endswith("k") else int(item)
    except ValueError:
        raise InputError(f"--{name}: {text!r} is not one integer (e.g. 1024 or 8k)") from None
    if value < minimum:
        raise InputError(f"--{name}: must be >= {minimum}, got {value}")
    return value


@app.command(epilog=EXAMPLES)
@handles_input_errors
def estimate(
    config: Annotated[Path, typer.Argument(help="latprof YAML model config or HF config.json.")],
    lut: Annotated[Path | None, typer.Option("--lut", help="LUT CSV from `latprof sweep`.")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Sequences decoded together.")] = "1",
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

    request = EstimateRequest(
        config=config,
        lut=lut,
        batch=_count(batch, "batch", 1),
        prompt=_count(prompt, "prompt", 0),
        generate=_count(generate, "generate", 1),
        context=None if context is None else _count(context, "context", 0),
        dtype=dtype,
        device=device,
        mode=mode,
        backend=backend,
        allow_extrapolation=allow_extrapolation,
        force=force,
        measure_missing=measure_missing,
        memory_only=memory_only,
        device_memory_gb=device_memory,
    )
    report = run_estimate(request)
    if as_json:
        print_json(report.as_json())
    else:
        print_report(report.as_json())


# ---- human output --------------------------------------------------------------------------------
def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:,.3f} s"
    return f"{value / 1e3:,.2f} ms" if value >= 1e4 else f"{value:,.1f} µs"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value} B"


def _short_spec(key: str) -> str:
    """`attention(width=2048,heads=16,...)` -> `heads=16,...` (op and width have columns)."""
    inner = key.split("(", 1)[1].rstrip(")")
    return ", ".join(p for p in inner.split(",") if not p.startswith("width="))


def print_report(doc: dict) -> None:
    """Rich tables for the `--json` document (one source of truth for both outputs)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    m, q = doc["model"], doc["query"]
    console.print(
        f"[bold]{m['name']}[/]: {m['layers']} layers ({m['summary']}), width {m['width']}, "
        f"vocab {m['vocab_size']:,}, {m['params'] / 1e6:,.1f} M params"
        + (f", {m['meta_tokens']} meta tokens" if m["meta_tokens"] else "")
    )
    if doc["lut"]:
        lut = doc["lut"]
        bw = f", floor at {lut['bandwidth_gbps']} GB/s" if lut["bandwidth_gbps"] else ""
        console.print(
            f"LUT {lut['path']}: {lut['device_name'] or lut['device']}, {lut['dtype']}, "
            f"{lut['mode']}{bw}"
        )
    if doc["layers"]:
        first, last = q["first_context"], q["last_context"]
        table = Table(title=f"Decode step, batch {q['batch']}, context {first} -> {last}")
        for name, justify in (
            ("op", "left"),
            ("spec", "left"),
            ("count", "right"),
            ("backend", "left"),
            (f"µs @{first}", "right"),
            (f"µs @{last}", "right"),
            ("share", "right"),
            ("floor µs", "right"),
            ("how", "left"),
        ):
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for r in doc["layers"]:
            how = r["interpolation"] + (" [red]EXTRAPOLATED[/]" if r["extrapolated"] else "")
            floor = "-" if r["roofline_us_last"] is None else f"{r['roofline_us_last']:,.1f}"
            table.add_row(
                r["op"],
                _short_spec(r["spec"]),
                str(r["count"]),
                r["backend"],
                f"{r['latency_us_first']:,.1f}",
                f"{r['latency_us_last']:,.1f}",
                f"{100 * r['share_of_step']:.1f}%",
                floor,
                how,
            )
        console.print(table)
        _print_totals(console, doc)
    _print_memory(console, doc)
    for note in doc["notes"]:
        console.print(f"[yellow]note[/]: {escape(note)}")


def _print_totals(console, doc: dict) -> None:
    from rich.table import Table

    t, q = doc["totals"], doc["query"]
    table = Table(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    floor = t["roofline_step_us_last"]
    rows = [
        (f"step latency @ context {q['first_context']}", _us(t["step_us_first"])),
        (
            f"step latency @ context {q['last_context']}",
            _us(t["step_us_last"]) + (f"  (floor {_us(floor)})" if floor else ""),
        ),
        (f"decode {q['generate']} tokens", _us(t["decode_us"])),
        (
            f"prefill {q['prompt']} tokens",
            _us(t["prefill_us"]) + (f"  ({t['prefill_note']})" if t["prefill_note"] else ""),
        ),
        ("tokens/s (decode)", f"{t['tokens_per_s']:,.1f}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for key, label in (("interpolated", "interpolated"), ("extrapolated", "EXTRAPOLATED")):
        if doc[key]:
            console.print(f"{label}: " + "; ".join(doc[key]), markup=False)


def _print_memory(console, doc: dict) -> None:
    from rich.table import Table

    mem = doc["memory"]
    meta = f" + {mem['meta_tokens']} meta" if mem["meta_tokens"] else ""
    title = f"Memory: {mem['dtype']}, batch {mem['batch']}, {mem['context']:,}{meta} tokens"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    for key, label in (
        ("weights_bytes", "weights"),
        ("kv_cache_bytes", "KV cache"),
        ("recurrent_state_bytes", "recurrent state"),
        ("conv_state_bytes", "conv state"),
        ("total_bytes", "total"),
    ):
        table.add_row(label, f"{mem[key]:,}", _bytes(mem[key]))
    console.print(table)
    fit = doc["max_batch"]
    if fit:
        line = (
            f"largest batch in {_bytes(fit['device_memory_bytes'])}: {fit['max_batch']:,} "
            f"({_bytes(fit['bytes_per_sequence'])} per sequence)"
        )
        if fit["tokens_per_s"] is not None:
            line += f", {fit['tokens_per_s']:,.0f} tokens/s"
        if fit["throughput_note"]:
            line += f" ({fit['throughput_note']})"
        console.print(line, markup=False)
