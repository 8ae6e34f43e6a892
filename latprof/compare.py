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
from latprof.grid import Point
from latprof.lut import LUT, row_key
from latprof.model import load_model
from latprof.settings import Settings
from latprof.stats import error_summary, relative_error_pct

#: end-to-end samples per point on a CPU: few points, so more samples to tighten each median
CPU_E2E_SAMPLES = 41


@dataclass(frozen=True)
class CompareRequest:
    """`settings` resolved for measuring (`Settings.resolve(measure=True)`), one batch."""

    configs: tuple[Path, ...]
    lut: Path
    settings: Settings
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
def _missing(points: list[Point], lut_path: Path) -> list[Point]:
    if not lut_path.exists():
        return list(points)
    table = LUT.load(lut_path)
    have = {k for k, r in table.index.items() if r.get("status") == "ok"}
    return [(spec, s) for spec, s in points if row_key(spec.key, s) not in have]


# ---- the comparison ----------------------------------------------------------------------------
def _graph_capturable(configs, models, backends: dict[str, str]):
    """(configs, models) whose every layer's backend (`backends`: op -> name) can be
    graph-captured, and a note per model left out."""
    from latprof.registry import operator

    kept_configs, kept, skipped = [], [], []
    for path, model in zip(configs, models, strict=True):
        blocking = sorted(
            {
                spec.op
                for spec in model.layers
                if not operator(spec.op).backend(backends.get(spec.op, "torch")).graph_capturable
            }
        )
        if blocking:
            skipped.append(
                f"{model.name} skipped: its {', '.join(blocking)} step synchronises with the host "
                "and cannot be captured in a CUDA graph (compare it with --mode eager)"
            )
        else:
            kept_configs.append(path)
            kept.append(model)
    return kept_configs, kept, skipped


def run_compare(req: CompareRequest, on_progress=None) -> CompareReport:
    from latprof import control, device_info, e2e, grid, sweep
    from latprof.estimate import Estimator
    from latprof.measure import environment, measure, plan_groups
    from latprof.timing import TimerConfig

    if not req.configs:
        raise InputError("compare needs at least one model config")
    s = req.settings
    batch, device, dtype, mode = s.batch_one, s.device, s.dtype, s.mode
    configs = list(req.configs)
    models = [load_model(p) for p in configs]
    # one backend per operator, chosen as the estimate chooses its rows: `op=name`, else the
    # general name where the operator has it, else torch
    backends_used = s.backends.for_ops(sorted({spec.op for m in models for spec in m.layers}))
    notes: list[str] = []
    if mode == "graph":  # a model whose step cannot sit in a CUDA graph is skipped, not fatal
        configs, models, skipped = _graph_capturable(configs, models, backends_used)
        notes += skipped
        if not models:
            raise InputError(
                "no model of the comparison can be captured in a CUDA graph: "
                + "; ".join(skipped)
                + ". Compare them with --mode eager."
            )

    def needed(selected) -> list[Point]:
        return grid.model_points(
            selected,
            batches=(batch,),
            contexts=s.context,
            dtype=dtype,
            device=device,
            mode=mode,
            backends=backends_used,
        )

    measured_missing = 0
    if req.measure_missing:
        todo = _missing(needed(models), req.lut)
        if todo:
            summary = sweep.run_sweep(todo, req.lut, command="latprof compare --measure-missing")
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
        backend=s.backends,
        allow_extrapolation=req.allow_extrapolation,
        force=req.force,
    )
    estimator = Estimator(req.lut, **estimator_kwargs)
    notes += estimator.notes
    estimates = {
        (i, c): estimator.step_latency_us(m, batch, c)
        for i, m in enumerate(models)
        for c in s.context
    }

    config = TimerConfig.for_device(device)
    if device == "cpu":
        config.samples = CPU_E2E_SAMPLES
    if req.samples:
        config.samples = req.samples
    env = environment(device)  # on a CPU: fixed thread count, flush denormals, as a sweep
    llc = env["llc_bytes"]
    backends_used = {
        op: backends_used[op] for op in sorted({sp.op for m in models for sp in m.layers})
    }
    backend_items = tuple(sorted(backends_used.items()))
    targets = {
        (i, c): e2e.ModelTarget(m, batch, c, dtype, device, mode, backend_items)
        for i, m in enumerate(models)
        for c in s.context
    }
    keys = {id(t): key for key, t in targets.items()}  # equal models stay separate points
    if req.same_session:  # one group per model: its LUT rows and itself, timed together
        groups = [[targets[(i, c)] for c in s.context] for i in range(len(models))]
    else:
        groups = plan_groups(list(targets.values()), llc)
    measured: dict[tuple[int, int], Any] = {}
    control_estimates: dict[tuple[int, int], float] = {}
    done = 0
    for group in groups:
        if on_progress:
            on_progress(done, len(targets), group[0].label)
        done += len(group)
        if req.same_session:
            i = keys[id(group[0])][0]
            rows, ms = control.measure_together(needed([models[i]]), group, env, config)
            sums = control.estimates_from_rows(
                rows, env, models[i], batch, s.context, estimator_kwargs
            )
            control_estimates.update({(i, c): v for c, v in sums.items()})
        else:
            ms = e2e.model_measurements(measure(group, llc, config))
        measured.update({keys[id(t)]: m for t, m in zip(group, ms, strict=True)})
    if on_progress:
        on_progress(len(targets), len(targets), "done")
    results = [
        ComparePoint(
            model=models[i].name,
            source=str(configs[i]),
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
        for i, c in targets
    ]

    generations = []
    if req.generate:  # whole generations the paper's way: one graph replay per token on a GPU
        from latprof.generate import decode

        prompt = req.prompt if req.prompt is not None else s.context[0]
        for m in models:
            est_us = estimator.decode_latency_us(m, batch, prompt, req.generate)
            target = e2e.ModelTarget(m, batch, prompt, dtype, device, mode, backend_items)
            measured_s = decode(target, prompt, req.generate).decode_s
            generations.append(
                GenerationPoint(m.name, prompt, req.generate, est_us / 1e6, measured_s)
            )

    return CompareReport(
        device=device,
        device_name=device_info.device_name(device),
        dtype=dtype,
        mode=mode,
        batch=batch,
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
