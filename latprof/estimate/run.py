"""One `latprof estimate` run: the request (the CLI's flags, parsed), and the `Report` of latency,
memory and the largest batch that fits, whose `as_json` is the `--json` document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.estimate.estimator import Estimator, check_query
from latprof.estimate.result import Estimate, MissingSpecs
from latprof.grid import Point
from latprof.memory import GB, BatchFit, MemoryReport, max_batch, memory_report
from latprof.model import ModelSpec, load_model
from latprof.settings import DEVICES, Settings, default_dtype, resolve_device

#: measures grid points into a LUT and returns a summary (`latprof.sweep.run_sweep`, which the
#: CLI passes in: estimating itself never imports torch)
Measure = Callable[[list[Point], Path], dict[str, Any]]


@dataclass(frozen=True)
class EstimateRequest:
    """Everything `latprof estimate` was asked (the CLI's flags, parsed).  `settings` resolved
    for estimating (`Settings.resolve(measure=False)`): None = the LUT's; one batch."""

    config: Path
    lut: Path | None = None
    settings: Settings = field(default_factory=lambda: Settings(None, None, None))
    prompt: int = 1024
    generate: int = 128
    context: int | None = None  # memory: tokens in the cache; default prompt + generate
    allow_extrapolation: bool = False
    force: bool = False
    measure_missing: bool = False
    memory_only: bool = False
    device_memory_gb: float | None = None


@dataclass
class Report:
    """What one run found: memory always; the estimate and the estimator where a LUT was given;
    the largest batch that fits (and its throughput) with --device-memory."""

    model: ModelSpec
    request: EstimateRequest
    memory: MemoryReport
    estimate: Estimate | None = None
    estimator: Estimator | None = None
    fit: BatchFit | None = None
    fit_tokens_per_s: float | None = None
    fit_note: str | None = None
    measured: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The `--json` document; its schema is documented in docs/estimate.md."""
        m, e, est = self.model, self.estimate, self.estimator
        out: dict[str, Any] = {
            "model": {
                "name": m.name,
                "source": m.source,
                "width": m.width,
                "vocab_size": m.vocab_size,
                "layers": len(m.layers),
                "summary": m.summary(),
                "tied_embeddings": m.tied_embeddings,
                "meta_tokens": m.meta_tokens,
                "params": m.param_count(),
            },
            "query": {
                "batch": self.request.settings.batch_one,
                "prompt": self.request.prompt,
                "generate": self.request.generate,
                "first_context": self.request.prompt,
                "last_context": self.request.prompt + self.request.generate - 1,
            },
            "lut": None,
            "layers": None,
            "totals": None,
            "interpolated": [],
            "extrapolated": [],
            "memory": self.memory.as_json(),
            "max_batch": None,
            "measured_missing": self.measured,
            "notes": list(m.notes) + self.notes + (est.notes if est else []),
        }
        if est is not None:
            s = est.settings
            out["lut"] = {
                "path": str(est.lut.path),
                "dtype": s.dtype,
                "device": s.device,
                "device_name": s.device_name,
                "mode": s.mode,
                "bandwidth_gbps": est.bandwidth_gbps,
            }
        if e is not None:
            out["layers"] = [r.as_json(e.step_us_last) for r in e.layers]
            out["totals"] = e.totals_json()
            out["interpolated"], out["extrapolated"] = e.interpolated, e.extrapolated
        if self.fit is not None:
            out["max_batch"] = {
                **self.fit.as_json(),
                "tokens_per_s": self.fit_tokens_per_s,
                "throughput_note": self.fit_note,
            }
        return out


def run_estimate(req: EstimateRequest, measure: Measure | None = None) -> Report:
    """Load the config (and LUT), estimate latency, memory and the largest batch that fits.
    `measure`: what `--measure-missing` measures with (required with it)."""
    model = load_model(req.config)
    batch = req.settings.batch_one
    check_query(batch, req.prompt, req.generate)
    context = req.context if req.context is not None else req.prompt + req.generate
    if req.measure_missing and measure is None:
        raise ValueError("run_estimate: measure_missing needs a `measure` function")
    if req.lut is None:
        if not req.memory_only:
            raise InputError("give --lut LUT for latency, or --memory-only for memory alone")
        report = Report(model, req, memory_report(model, batch, context, _memory_dtype(req)))
    else:
        est = _estimator(req)
        report = Report(
            model,
            req,
            memory_report(model, batch, context, est.settings.dtype_name),
            estimator=est,
        )
        if not req.memory_only:
            # missing specs first, then specs the LUT could only extrapolate: at most two rounds
            for attempt in range(3):
                try:
                    report.estimate = est.estimate(model, batch, req.prompt, req.generate)
                    break
                except MissingSpecs as exc:
                    if not req.measure_missing or attempt == 2:
                        raise
                    report.measured = measure(est.missing_points(exc.missing), est.lut.path)
                    report.notes.append(
                        f"--measure-missing: {len(exc.missing)} spec(s) measured into "
                        f"{est.lut.path}"
                    )
                    report.estimator = est = _estimator(req)
    if req.device_memory_gb is not None:
        _fit(report, context, int(req.device_memory_gb * GB))
    return report


def _memory_dtype(req: EstimateRequest) -> str:
    """The dtype of a memory-only estimate without a LUT: --dtype, else the default of the
    device asked for; `--device auto` resolves the device as every command does (this imports
    torch, in this one case)."""
    s = req.settings
    if s.dtype:
        return s.dtype
    if s.device is None:
        device = resolve_device("auto")
    else:  # a device name (not cpu / cuda) is taken for a GPU's
        device = s.device if s.device in DEVICES else "cuda"
    return default_dtype(device)


def _estimator(req: EstimateRequest) -> Estimator:
    return Estimator.for_settings(
        req.lut, req.settings, allow_extrapolation=req.allow_extrapolation, force=req.force
    )


def _fit(report: Report, context: int, device_bytes: int) -> None:
    req = report.request
    report.fit = max_batch(report.model, context, report.memory.dtype, device_bytes)
    if report.estimator is None:
        report.fit_note = "no LUT given: throughput needs --lut"
    elif report.fit.batch == 0:
        report.fit_note = "the weights alone do not fit"
    else:
        report.fit_tokens_per_s, report.fit_note = report.estimator.throughput_at(
            report.model, report.fit.batch, req.prompt, req.generate
        )
