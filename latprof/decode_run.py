"""One `latprof decode` run: every model, every mode, one generation each (`latprof.generate`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latprof import device_info
from latprof.e2e import ModelTarget
from latprof.generate import decode, summarize
from latprof.measure import environment
from latprof.model import load_model
from latprof.settings import Settings

MASKED_NOTE = (
    "attention on {backend}: with the position in a device tensor it attends over the whole "
    "static cache (meta + prompt + generate tokens) with a mask, so each step costs what the "
    "last one does; triton / flash_attn attend over the cached positions only"
)


def run_decode(
    configs: Sequence[Path],
    settings: Settings,
    *,
    prompt: int,
    generate: int,
    modes: Sequence[str],
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate with every model in every mode -> the `--json` document."""
    from latprof.generate import check_positions
    from latprof.report import progress_bar

    models = [load_model(p) for p in configs]
    for m in models:
        check_positions(m, prompt, generate)
    env = environment(settings.device, threads)
    batch = settings.batch_one
    notes: list[str] = []
    out_models = []
    for path, model in zip(configs, models, strict=True):
        backends = settings.backends.for_ops(s.op for s in model.layers)
        masked = {
            b
            for op, b in backends.items()
            if op in ("attention", "shared_attention") and b in ("torch", "sdpa")
        }
        for b in sorted(masked):
            note = MASKED_NOTE.format(backend=b)
            if note not in notes:
                notes.append(note)
        results = {}
        for mode in modes:
            target = ModelTarget(
                model,
                batch,
                prompt,
                settings.dtype,
                settings.device,
                mode,
                tuple(sorted(backends.items())),
            )
            with progress_bar(enabled=progress) as on_progress:
                label = f"{model.name} ({mode})"
                on_progress(0, generate, label)
                result = decode(
                    target,
                    prompt,
                    generate,
                    on_token=lambda i, label=label: on_progress(i, generate, label),
                )
                on_progress(generate, generate, label)
            results[mode] = summarize(result, model, settings.dtype, env["bandwidth_gbps"])
        entry = {
            "model": model.name,
            "source": str(path),
            "params": model.param_count(),
            "backends": backends,
            "results": results,
        }
        if "graph" in results and "eager" in results:
            entry["eager_over_graph"] = results["eager"]["decode_s"] / results["graph"]["decode_s"]
        out_models.append(entry)
    return {
        "device": settings.device,
        "device_name": device_info.device_name(settings.device),
        "dtype": settings.dtype,
        "batch": batch,
        "prompt": prompt,
        "generate": generate,
        "bandwidth_gbps": env["bandwidth_gbps"],
        "bandwidth_source": env["bandwidth_source"],
        "threads": env["threads"],
        "models": out_models,
        "notes": notes,
    }
