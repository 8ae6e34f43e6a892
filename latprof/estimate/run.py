"""One `latprof estimate` run: the request (the CLI's flags, parsed), and the `Report` of latency,
memory and the largest batch that fits, whose `as_json` is the `--json` document."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.estimate.estimator import Estimator, check_query
from latprof.estimate.result import Estimate, Missing, MissingSpecs
from latprof.memory import GB, BatchFit, MemoryReport, max_batch, memory_report
from latprof.model import ModelSpec, load_model


@dataclass(frozen=True)
class EstimateRequest:
    """Everything `latprof estimate` was asked (the CLI's flags, parsed)."""

    config: Path
    lut: Path | None = None
    batch: int = 1
    prompt: int = 1024
    generate: int = 128
    context: int | None = None  # memory: tokens in the cache; default prompt + generate
    dtype: str | None = None
    device: str = "auto"
    mode: str | None = None
    backend: str | None = None
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
                "batch": self.request.batch,
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


def run_estimate(req: EstimateRequest) -> Report:
    """Load the config (and LUT), estimate latency, memory and the largest batch that fits."""
    model = load_model(req.config)
    check_query(req.batch, req.prompt, req.generate)
    context = req.context if req.context is not None else req.prompt + req.generate
    if req.lut is None:
        if not req.memory_only:
            raise InputError("give --lut LUT for latency, or --memory-only for memory alone")
        dtype = req.dtype or ("float32" if req.device == "cpu" else "bfloat16")
        report = Report(model, req, memory_report(model, req.batch, context, dtype))
    else:
        est = _estimator(req)
        report = Report(
            model,
            req,
            memory_report(model, req.batch, context, est.settings.dtype_name),
            estimator=est,
        )
        if not req.memory_only:
            # missing specs first, then specs the LUT could only extrapolate: at most two rounds
            for attempt in range(3):
                try:
                    report.estimate = est.estimate(model, req.batch, req.prompt, req.generate)
                    break
                except MissingSpecs as exc:
                    if not req.measure_missing or attempt == 2:
                        raise
                    report.measured = _measure(est, exc.missing)
                    report.notes.append(
                        f"--measure-missing: {len(exc.missing)} spec(s) measured into "
                        f"{est.lut.path}"
                    )
                    report.estimator = est = _estimator(req)
    if req.device_memory_gb is not None:
        _fit(report, context, int(req.device_memory_gb * GB))
    return report


def _estimator(req: EstimateRequest) -> Estimator:
    return Estimator(
        req.lut,
        dtype=req.dtype,
        device=req.device,
        mode=req.mode,
        backend=req.backend,
        allow_extrapolation=req.allow_extrapolation,
        force=req.force,
    )


def _measure(est: Estimator, missing: list[Missing]) -> dict[str, Any]:
    points = est.missing_points(missing)
    from latprof.sweep import measure_points  # imports torch: only here

    return measure_points(points, est.lut.path).as_dict()


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
