"""LUT sum vs. end-to-end measurement, per model and across models.

For every model config and context: the LUT estimate of one decode step (`latprof.estimate`) beside
the measured step of the whole model built from the same spec (`latprof.e2e`), their relative
error, and across all of them the error statistics and the rank agreement (Kendall tau, Spearman
rho) that decide whether a LUT can stand in for measurement in an architecture search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.lut import ANY_CONTEXT, LUT, Setting, row_key
from latprof.model import ModelSpec, load_model
from latprof.specs import OpSpec, canonical_dtype
from latprof.stats import error_summary, relative_error_pct

#: whole-model points timed together in interleaved rounds on a CPU (as the sweep's groups)
CPU_GROUP_MAX_POINTS = 8
CPU_GROUP_MAX_BYTES = 6 * 1024**3
#: end-to-end samples per point on a CPU: few points, so more samples to tighten each median
CPU_E2E_SAMPLES = 41


@dataclass(frozen=True)
class CompareRequest:
    configs: tuple[Path, ...]
    lut: Path
    batch: int = 1
    contexts: tuple[int, ...] = (1024,)
    device: str = "auto"
    dtype: str | None = None
    mode: str | None = None
    backend: str | None = None  # names or op=name pairs, as for sweep / estimate
    generate: int | None = None
    prompt: int | None = None  # for --generate; default: the first context
    measure_missing: bool = False
    allow_extrapolation: bool = False
    force: bool = False
    samples: int | None = None
    same_session: bool = False  # also time each model's LUT rows beside it (latprof.control)


@dataclass
class ComparePoint:
    model: str
    source: str
    operators: int
    width: int
    context: int
    estimate_us: float
    measured_us: float
    measured_p10_us: float
    measured_p90_us: float
    measured_cv: float
    flags: list[str] = field(default_factory=list)
    #: the estimate summed from rows timed in the same rounds as this model (--same-session)
    same_session_estimate_us: float | None = None

    @property
    def error_pct(self) -> float:
        return relative_error_pct(self.estimate_us, self.measured_us)

    @property
    def same_session_error_pct(self) -> float | None:
        if self.same_session_estimate_us is None:
            return None
        return relative_error_pct(self.same_session_estimate_us, self.measured_us)

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["error_pct"] = self.error_pct
        out["same_session_error_pct"] = self.same_session_error_pct
        return out


@dataclass
class GenerationPoint:
    model: str
    prompt: int
    generate: int
    estimate_s: float
    measured_s: float

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["error_pct"] = relative_error_pct(self.estimate_s, self.measured_s)
        return out


@dataclass
class CompareReport:
    device: str
    device_name: str
    dtype: str
    mode: str
    batch: int
    lut: str
    backends: dict[str, str]
    points: list[ComparePoint]
    generations: list[GenerationPoint]
    measured_missing: int
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        est = [p.estimate_us for p in self.points]
        meas = [p.measured_us for p in self.points]
        out: dict[str, Any] = {"all": error_summary(est, meas)}
        worst = self.points[out["all"].pop("worst_index")]
        out["all"]["worst"] = f"{worst.model} @ {worst.context}"
        for c in sorted({p.context for p in self.points}):
            sel = [p for p in self.points if p.context == c]
            if len(sel) > 1:
                s = error_summary([p.estimate_us for p in sel], [p.measured_us for p in sel])
                s.pop("worst_index")
                out[f"context_{c}"] = s
        control = [p for p in self.points if p.same_session_estimate_us is not None]
        if control:
            c = error_summary(
                [p.same_session_estimate_us for p in control], [p.measured_us for p in control]
            )
            c.pop("worst_index")
            out["same_session"] = c
        if self.generations:
            g = error_summary(
                [x.estimate_s for x in self.generations], [x.measured_s for x in self.generations]
            )
            g.pop("worst_index")
            out["generation"] = g
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "mode": self.mode,
            "batch": self.batch,
            "lut": self.lut,
            "backends": self.backends,
            "points": [p.as_json() for p in self.points],
            "generations": [g.as_json() for g in self.generations],
            "summary": self.summary(),
            "measured_missing_rows": self.measured_missing,
            "notes": self.notes,
        }


# ---- LUT rows the comparison needs -------------------------------------------------------------
def needed_points(
    models: list[ModelSpec],
    batch: int,
    contexts: tuple[int, ...],
    dtype: str,
    device: str,
    mode: str,
    backends: dict[str, str],
    default_backend: str,
) -> list[tuple[OpSpec, Setting]]:
    """Exact LUT rows that make every estimate a sum of measured rows (no interpolation)."""
    points: dict[tuple, tuple[OpSpec, Setting]] = {}
    for model in models:
        for spec in (*model.layers, model.embedding, model.lm_head):
            backend = backends.get(spec.op, default_backend)
            ctxs = (
                [c + model.meta_tokens for c in contexts]
                if spec.context_dependent
                else [ANY_CONTEXT]
            )
            for c in ctxs:
                s = Setting(
                    "decode",
                    batch,
                    max(c, 1) if spec.context_dependent else c,
                    dtype,
                    device,
                    backend,
                    mode,
                )
                points.setdefault((spec.key, s), (spec, s))
    return list(points.values())


def _missing(points, lut_path: Path) -> list[tuple[OpSpec, Setting]]:
    if not lut_path.exists():
        return list(points)
    table = LUT.load(lut_path)
    have = {k for k, r in table.index.items() if r.get("status") == "ok"}
    return [(spec, s) for spec, s in points if row_key(spec.key, s) not in have]


# ---- the comparison ----------------------------------------------------------------------------
def run_compare(req: CompareRequest, on_progress=None) -> CompareReport:
    from latprof import control, device_info, e2e, sweep
    from latprof.estimate import Estimator, parse_backends
    from latprof.grid import resolve_mode
    from latprof.timing import TimerConfig, interleave_groups

    if not req.configs:
        raise InputError("compare needs at least one model config")
    if req.batch <= 0 or any(c <= 0 for c in req.contexts):
        raise InputError("--batch and --context must be positive")
    models = [load_model(p) for p in req.configs]
    device = device_info.resolve_device(req.device)
    dtype = canonical_dtype(req.dtype or device_info.default_dtype(device))
    mode = resolve_mode(req.mode, device)
    default_backend, per_op = parse_backends(req.backend)
    default_backend = default_backend or "torch"
    notes: list[str] = []

    measured_missing = 0
    if req.measure_missing:
        wanted = needed_points(
            models, req.batch, req.contexts, dtype, device, mode, per_op, default_backend
        )
        todo = _missing(wanted, req.lut)
        if todo:
            summary = sweep.measure_points(
                todo, req.lut, command="latprof compare --measure-missing"
            )
            measured_missing = summary.measured
            notes.append(f"measured {summary.measured} missing LUT rows first")
    elif not req.lut.exists():
        raise InputError(
            f"LUT file {req.lut} does not exist; pass --measure-missing to build the "
            "rows this comparison needs, or give a LUT from `latprof sweep`"
        )

    estimator_kwargs = dict(
        dtype=dtype,
        device=device,
        mode=mode,
        backend=req.backend,
        allow_extrapolation=req.allow_extrapolation,
        force=req.force,
    )
    estimator = Estimator(req.lut, **estimator_kwargs)
    notes += estimator.notes
    estimates = {
        (i, c): estimator.step_latency_us(m, req.batch, c)
        for i, m in enumerate(models)
        for c in req.contexts
    }

    config = TimerConfig.for_device(device)
    if device == "cpu":
        config.samples = CPU_E2E_SAMPLES
    if req.samples:
        config.samples = req.samples
    env = sweep.environment(device)  # on a CPU: fixed thread count, flush denormals, as a sweep
    llc = env["llc_bytes"]
    backends_used = {
        op: per_op.get(op, default_backend)
        for op in sorted({s.op for m in models for s in m.layers})
    }
    backend_items = tuple(sorted(backends_used.items()))
    e2e_points = [
        (i, c, e2e.E2EPoint(m, req.batch, c, dtype, device, mode, backend_items))
        for i, m in enumerate(models)
        for c in req.contexts
    ]
    if req.same_session:  # one group per model: its LUT rows and itself, timed together
        groups = [[item for item in e2e_points if item[0] == i] for i in range(len(models))]
    elif device == "cpu":
        groups = interleave_groups(
            e2e_points,
            lambda item: e2e.held_bytes(item[2], llc),
            CPU_GROUP_MAX_POINTS,
            CPU_GROUP_MAX_BYTES,
        )
    else:
        groups = [[item] for item in e2e_points]
    measured: dict[tuple[int, int], Any] = {}
    control_estimates: dict[tuple[int, int], float] = {}
    done = 0
    for group in groups:
        if on_progress:
            on_progress(done, len(e2e_points), group[0][2].model.name)
        done += len(group)
        points = [p for _, _, p in group]
        if req.same_session:
            i = group[0][0]
            op_points = needed_points(
                [models[i]], req.batch, req.contexts, dtype, device, mode, per_op, default_backend
            )
            rows, ms = control.measure_together(op_points, points, env, config)
            sums = control.estimates_from_rows(
                rows, env, models[i], req.batch, req.contexts, estimator_kwargs
            )
            control_estimates.update({(i, c): v for c, v in sums.items()})
        else:
            ms = e2e.measure(points, llc, config)
        measured.update({(i, c): m for (i, c, _), m in zip(group, ms, strict=True)})
    if on_progress:
        on_progress(len(e2e_points), len(e2e_points), "done")
    results = [
        ComparePoint(
            model=models[i].name,
            source=str(req.configs[i]),
            operators=len(models[i].layers),
            width=models[i].width,
            context=c,
            estimate_us=estimates[(i, c)],
            measured_us=measured[(i, c)].median_us,
            measured_p10_us=measured[(i, c)].quantile_us(0.1),
            measured_p90_us=measured[(i, c)].quantile_us(0.9),
            measured_cv=measured[(i, c)].cv,
            flags=measured[(i, c)].flags,
            same_session_estimate_us=control_estimates.get((i, c)),
        )
        for i, c, _ in e2e_points
    ]

    generations = []
    if req.generate:
        prompt = req.prompt if req.prompt is not None else req.contexts[0]
        if mode == "graph":
            notes.append(
                "--generate runs its steps eagerly: a graph per step would re-capture "
                "every token; its estimate uses the LUT's graph-mode rows"
            )
        for m in models:
            est_us = estimator.decode_latency_us(m, req.batch, prompt, req.generate)
            point = e2e.E2EPoint(
                m, req.batch, prompt, dtype, device, "eager", tuple(sorted(backends_used.items()))
            )
            wall = e2e.generation_wall_s(point, prompt, req.generate)
            generations.append(GenerationPoint(m.name, prompt, req.generate, est_us / 1e6, wall))

    return CompareReport(
        device=device,
        device_name=device_info.device_name(device),
        dtype=dtype,
        mode=mode,
        batch=req.batch,
        lut=str(req.lut),
        backends=backends_used,
        points=results,
        generations=generations,
        measured_missing=measured_missing,
        notes=notes,
    )


def plot(report: CompareReport, path: Path) -> None:
    """Estimate against measurement, log-log, with y = x and the ±5% / ±10% bands."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib (pip install matplotlib)") from None
    meas = [p.measured_us / 1e3 for p in report.points]
    est = [p.estimate_us / 1e3 for p in report.points]
    lo, hi = min(meas + est) * 0.8, max(meas + est) * 1.25
    fig, ax = plt.subplots(figsize=(6.5, 6))
    xs = [lo, hi]
    ax.fill_between(xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="0.92", label="±10%")
    ax.fill_between(xs, [x * 0.95 for x in xs], [x * 1.05 for x in xs], color="0.82", label="±5%")
    ax.plot(xs, xs, color="k", lw=1, label="y = x")
    for c in sorted({p.context for p in report.points}):
        sel = [p for p in report.points if p.context == c]
        ax.scatter(
            [p.measured_us / 1e3 for p in sel],
            [p.estimate_us / 1e3 for p in sel],
            s=22,
            label=f"context {c}",
        )
    s = report.summary()["all"]
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="measured decode step (ms)",
        ylabel="LUT estimate (ms)",
        title=f"{report.device_name}, {report.dtype}, {report.mode}, batch {report.batch}\n"
        f"median |err| {s['median_abs_error_pct']:.1f}%, Kendall τ {s['kendall_tau']:.2f}",
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
