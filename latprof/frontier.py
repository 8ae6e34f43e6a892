"""The depth-width frontier: under a latency budget, the widest model of each depth and its size.

The Nemotron-Flash paper's first finding (arXiv 2511.18890, Section 3.1 and its table of Llama
models at depths 12 and 24): at small batch, decode latency is governed by depth, so at equal
latency a shallow wide model holds far more parameters than a deep thin one.  This module answers
that question from a LUT, for any family of models whose one free variable is the width:

- a `Family` builds the model of `depth` blocks at `width`: the built-in `llama` (attention + SwiGLU
  FFN, shapes by the registry's defaults) or a latprof YAML template with `width: free` and a
  `block:` pattern repeated `depth` times (hybrids have frontiers too);
- every (depth, width) of the grid gets its parameters and the decode latency of T tokens after P
  from the LUT (`Estimator.decode_latency_us`, interpolating in width as `estimate` does);
- for every budget: per depth, the widest model that fits, its parameters (or predicted loss with a
  `LossModel`), the ratio of the shallowest depth's parameters to the deepest's, the best depth.

Nothing here imports torch: a frontier of 6 depths x 60 widths x 10 budgets takes well under a
second once the LUT is loaded (benchmarks/bench_frontier.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from latprof.config_yaml import model_from_dict, read_yaml
from latprof.errors import InputError
from latprof.estimate import Estimator, MissingSpecs
from latprof.estimate.result import Missing
from latprof.model_spec import ModelSpec
from latprof.registry import build_spec
from latprof.specs import OpSpec

#: `llama`: widths are multiples of its attention head_dim (the registry's default, 128)
LLAMA_WIDTH_MULTIPLE = 128
LLAMA_VOCAB = 32000
AUTO_BUDGETS = 8


# ---- families --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Models of one shape whose free variable is the width.  `block(width)` gives one block's
    layers; a model of depth D is D blocks, plus the embedding and LM head."""

    name: str
    block: Callable[[int], tuple[OpSpec, ...]]
    vocab_size: int
    tied_embeddings: bool = False
    meta_tokens: int = 0
    description: str = ""

    def model(self, depth: int, width: int) -> ModelSpec:
        return ModelSpec(
            f"{self.name}-d{depth}-w{width}",
            width,
            self.vocab_size,
            self.block(width) * depth,
            self.tied_embeddings,
            self.meta_tokens,
            source=f"frontier family {self.name}",
        )


def llama_family(vocab_size: int = LLAMA_VOCAB) -> Family:
    """Llama blocks: attention (head_dim 128, heads = width / 128, KV heads the largest divisor
    of heads at most heads / 4, RoPE) and a SwiGLU FFN of 3 x width rounded to 128; untied."""

    @cache  # a grid asks for each width's block once per depth
    def block(width: int) -> tuple[OpSpec, ...]:
        if width % LLAMA_WIDTH_MULTIPLE:
            raise InputError(
                f"family llama: width {width} breaks its shape rule: widths are multiples of "
                f"{LLAMA_WIDTH_MULTIPLE} (heads = width / head_dim 128)"
            )
        return (build_spec("attention", width), build_spec("ffn", width))

    return Family("llama", block, vocab_size, description=llama_family.__doc__ or "")


def template_family(path: str | Path) -> Family:
    """A latprof YAML template: the model format with `width: free` and `block:` (a pattern, one
    block) instead of `pattern:` / `layers:`.  Parameters in `defaults` must hold at every width
    of the grid (give head_dim rather than heads, say); a width that breaks them is an error."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a family template is a YAML mapping (see docs/frontier.md)")
    if data.get("width") != "free":
        raise InputError(
            f"{path}: a family template leaves its width symbolic (`width: free`); this file "
            f"sets width: {data.get('width')!r}. The frontier varies the width itself."
        )
    if "block" not in data or any(k in data for k in ("pattern", "layers")):
        raise InputError(
            f"{path}: a family template gives `block:` (one block's pattern, repeated `depth` "
            "times) and neither `pattern:` nor `layers:`"
        )
    name = str(data.get("name") or path.stem)

    def one_block(width: int) -> ModelSpec:
        one = {k: v for k, v in data.items() if k not in ("width", "block")}
        one.update(width=width, pattern=data["block"])
        return model_from_dict(one, str(path), name)

    @cache  # a grid asks for each width's block once per depth
    def block(width: int) -> tuple[OpSpec, ...]:
        try:
            return one_block(width).layers
        except InputError as exc:
            raise InputError(
                f"family {name}: width {width} breaks its shape rules: {exc}"
            ) from None

    first = one_block(1024)  # vocab_size, embeddings and the block itself checked up front
    return Family(name, block, first.vocab_size, first.tied_embeddings, first.meta_tokens)


def load_family(name_or_path: str, vocab_size: int | None = None) -> Family:
    """`llama`, or the path of a YAML template."""
    if name_or_path == "llama":
        return llama_family(vocab_size or LLAMA_VOCAB)
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(
            f"unknown family {name_or_path!r}: give `llama` or the path of a latprof YAML "
            "template with `width: free` and `block:`"
        )
    if vocab_size is not None:
        raise InputError("--vocab applies to the built-in llama family; a template sets its own")
    return template_family(path)


# ---- loss model -------------------------------------------------------------------------------
LOSS_TERMS = {"A": "alpha", "B": "beta", "C": "gamma", "F": "delta"}


@dataclass(frozen=True)
class LossModel:
    """L = E + A / D^alpha + B / W^beta + C / N^gamma + F / T^delta: depth D, width W, parameters
    N, training tokens T (`tokens`); a term is left out where its coefficient is not given."""

    E: float
    terms: tuple[tuple[str, float, float], ...]  # (variable, coefficient, exponent)
    tokens: float | None = None
    source: str = ""

    def loss(self, depth: int, width: int, params: int) -> float:
        values = {"A": depth, "B": width, "C": params, "F": self.tokens}
        return self.E + sum(coef / values[var] ** exp for var, coef, exp in self.terms)

    @classmethod
    def load(cls, path: str | Path) -> LossModel:
        path = Path(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: a loss model is a YAML mapping of E, A, alpha, ...")
        known = {"E", "tokens", "name", *LOSS_TERMS, *LOSS_TERMS.values()}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(
                f"{path}: unknown key(s) {', '.join(unknown)} in the loss model; it holds "
                "E, A, alpha (depth), B, beta (width), C, gamma (parameters), F, delta and tokens"
            )

        def number(key: str) -> float:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"{path}: {key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InputError(f"{path}: {key} must be finite, got {value!r}")
            return float(value)

        if "E" not in data:
            raise InputError(f"{path}: the loss model needs E, its irreducible loss")
        terms = []
        for coef, exp in LOSS_TERMS.items():
            if (coef in data) != (exp in data):
                raise InputError(f"{path}: {coef} and {exp} go together; give both or neither")
            if coef in data:
                if number(exp) < 0:
                    raise InputError(f"{path}: {exp} must be >= 0, got {data[exp]}")
                terms.append((coef, number(coef), number(exp)))
        tokens = number("tokens") if "tokens" in data else None
        if "F" in data and (tokens is None or tokens <= 0):
            raise InputError(f"{path}: the F / T^delta term needs tokens > 0 (training tokens)")
        if not terms:
            raise InputError(f"{path}: the loss model has no term besides E")
        return cls(number("E"), tuple(terms), tokens, str(path))


# ---- the frontier -----------------------------------------------------------------------------
@dataclass
class GridPoint:
    depth: int
    width: int
    params: int
    latency_s: float | None  # None: the LUT cannot answer (see `status`)
    status: str = "ok"  # ok | extrapolated | outside
    loss: float | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BudgetRow:
    budget_s: float
    #: depth -> the widest point of that depth within the budget (None: none fits)
    best_per_depth: dict[int, GridPoint | None]
    ratio: float | None  # parameters at the shallowest depth / at the deepest
    best_depth: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "per_depth": {
                str(d): (p.as_json() if p else None) for d, p in self.best_per_depth.items()
            },
            "ratio_shallowest_to_deepest": self.ratio,
            "best_depth": self.best_depth,
        }


@dataclass
class Frontier:
    family: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    batch: int
    prompt: int
    generate: int
    lut: str
    device_name: str | None
    score: str  # "params" or "loss (FILE)"
    points: list[GridPoint]
    budgets: list[BudgetRow]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "depths": list(self.depths),
            "widths": list(self.widths),
            "batch": self.batch,
            "prompt": self.prompt,
            "generate": self.generate,
            "lut": self.lut,
            "device_name": self.device_name,
            "score": self.score,
            "budgets": [b.as_json() for b in self.budgets],
            "points": [p.as_json() for p in self.points],
            "notes": self.notes,
        }


def parse_widths(text: str) -> tuple[int, ...]:
    """`512:4096:128` (start:stop:step, stop included) or a comma list."""
    from latprof.settings import parse_counts

    if ":" not in text:
        return tuple(sorted(set(parse_counts(text, "widths"))))
    parts = text.split(":")
    if len(parts) != 3:
        raise InputError(f"--widths {text!r}: give start:stop:step (e.g. 512:4096:128) or a list")
    start, stop, step = (parse_counts(p, "widths")[0] for p in parts)
    if stop < start:
        raise InputError(f"--widths {text!r}: stop {stop} is below start {start}")
    return tuple(range(start, stop + 1, step))


def parse_budgets(text: str) -> tuple[float, ...] | None:
    """`2.5,5,10` (seconds) -> (2.5, 5.0, 10.0); `auto` -> None."""
    if text.strip().lower() == "auto":
        return None
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"--budgets: {item!r} is not a number of seconds") from None
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"--budgets: budgets are positive seconds, got {item}")
        out.append(value)
    if not out:
        raise InputError("--budgets: give budgets in seconds (2.5,5,10) or auto")
    return tuple(sorted(set(out)))


def grid(
    family: Family,
    depths: Sequence[int],
    widths: Sequence[int],
    estimator: Estimator,
    *,
    batch: int,
    prompt: int,
    generate: int,
    extrapolating: Estimator | None = None,
    loss_model: LossModel | None = None,
    missing: list[Missing] | None = None,
) -> list[GridPoint]:
    """Every (depth, width): parameters and decode latency.  A point the LUT answers only by
    extrapolation takes `extrapolating`'s value (flagged) where given, else is `outside`; the
    specs behind what could not be answered are added to `missing`."""
    points = []
    for width in widths:
        for depth in depths:
            model = family.model(depth, width)
            params = model.param_count()
            status, latency_us = "ok", None
            try:
                latency_us = estimator.decode_latency_us(model, batch, prompt, generate)
            except MissingSpecs as exc:
                if missing is not None:
                    missing.extend(exc.missing)
                status = "outside"
                if extrapolating is not None:
                    try:
                        latency_us = extrapolating.decode_latency_us(model, batch, prompt, generate)
                        status = "extrapolated"
                    except MissingSpecs:
                        pass
            loss = loss_model.loss(depth, width, params) if loss_model else None
            latency_s = None if latency_us is None else latency_us / 1e6
            points.append(GridPoint(depth, width, params, latency_s, status, loss))
    return points


def auto_budgets(points: list[GridPoint], depths: Sequence[int]) -> tuple[float, ...]:
    """Budgets spanning what the grid reaches: from the smallest latency at which every depth has
    a model to the largest at which every depth's widest model still decides (geometric)."""
    usable = [p for p in points if p.latency_s is not None]
    lows = [min((p.latency_s for p in usable if p.depth == d), default=None) for d in depths]
    highs = [max((p.latency_s for p in usable if p.depth == d), default=None) for d in depths]
    lows, highs = [v for v in lows if v is not None], [v for v in highs if v is not None]
    if not lows:
        return ()
    lo, hi = max(lows), min(highs)
    if hi <= lo:  # the depths' ranges do not overlap: span everything
        lo, hi = min(lows), max(highs)
    if hi <= lo:
        return (_round3(lo),)
    ratio = (hi / lo) ** (1 / (AUTO_BUDGETS - 1))
    # the first budget rounded up, so every depth really has a model within it
    first = _round3_up(lo)
    rest = (_round3(lo * ratio**i) for i in range(1, AUTO_BUDGETS))
    return tuple(dict.fromkeys((first, *(b for b in rest if b > first))))


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def _round3_up(x: float) -> float:
    """`x` rounded up to three significant digits."""
    scale = 10 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.ceil(x / scale - 1e-9) * scale:.6g}")


def budget_rows(
    points: list[GridPoint], depths: Sequence[int], budgets: Sequence[float], by_loss: bool
) -> list[BudgetRow]:
    rows = []
    shallow, deep = min(depths), max(depths)
    for budget in budgets:
        per_depth: dict[int, GridPoint | None] = {}
        for d in sorted(depths):
            fits = [
                p
                for p in points
                if p.depth == d and p.latency_s is not None and p.latency_s <= budget
            ]
            per_depth[d] = max(fits, key=lambda p: p.width) if fits else None
        a, b = per_depth[shallow], per_depth[deep]
        ratio = a.params / b.params if a and b and shallow != deep else None
        present = [p for p in per_depth.values() if p]
        if not present:
            best = None
        elif by_loss:
            best = min(present, key=lambda p: p.loss).depth
        else:
            best = max(present, key=lambda p: p.params).depth
        rows.append(BudgetRow(budget, per_depth, ratio, best))
    return rows


def frontier(
    family: Family,
    depths: Sequence[int],
    widths: Sequence[int],
    estimator: Estimator,
    *,
    batch: int = 1,
    prompt: int = 0,
    generate: int = 1,
    budgets: Sequence[float] | None = None,
    extrapolating: Estimator | None = None,
    loss_model: LossModel | None = None,
) -> Frontier:
    """The frontier of `family` on `estimator`'s LUT (see the module docstring).  `budgets` in
    seconds (None: `auto_budgets`).  A budget no model meets is an error naming the smallest
    latency the grid reaches."""
    depths = tuple(sorted(set(depths)))
    widths = tuple(sorted(set(widths)))
    if not depths:
        raise InputError("--depths: give at least one depth (e.g. 12,24)")
    if not widths:
        raise InputError("--widths: give at least one width")
    missing: list[Missing] = []
    points = grid(
        family,
        depths,
        widths,
        estimator,
        batch=batch,
        prompt=prompt,
        generate=generate,
        extrapolating=extrapolating,
        loss_model=loss_model,
        missing=missing,
    )
    usable = [p for p in points if p.latency_s is not None]
    if not usable:
        raise MissingSpecs(
            f"the LUT answers for no model of the grid (family {family.name}, widths "
            f"{widths[0]}-{widths[-1]}): "
            + _missing_text(missing)
            + ". Sweep the family's operators at these widths, pass --measure-missing, or "
            "--allow-extrapolation to extrapolate from the widths and contexts it has.",
            missing,
        )
    notes = []
    outside = [p for p in points if p.status == "outside"]
    if outside:
        ws = sorted({p.width for p in outside})
        notes.append(
            f"{len(outside)} of {len(points)} grid points left out: the LUT answers widths "
            f"{', '.join(map(str, ws))} only by extrapolation or not at all "
            "(--allow-extrapolation, --measure-missing)"
        )
    if any(p.status == "extrapolated" for p in points):
        notes.append("points marked extrapolated lie outside the LUT's measured widths")
    chosen = tuple(budgets) if budgets is not None else auto_budgets(points, depths)
    fastest = min(usable, key=lambda p: p.latency_s)
    for budget in chosen:
        if budget < fastest.latency_s:
            raise InputError(
                f"budget {budget:g} s: no model of the grid meets it; the smallest latency reached "
                f"is {fastest.latency_s:.4g} s (depth {fastest.depth}, width {fastest.width})"
            )
    score = f"loss ({loss_model.source})" if loss_model else "params"
    if not loss_model:
        notes.append(
            "score: parameters (no --loss-model given); more parameters is not "
            "necessarily lower loss"
        )
    rows = budget_rows(points, depths, chosen, by_loss=loss_model is not None)
    return Frontier(
        family.name,
        depths,
        widths,
        batch,
        prompt,
        generate,
        str(estimator.lut.path),
        estimator.settings.device_name,
        score,
        points,
        rows,
        notes,
    )


def _missing_text(missing: list[Missing]) -> str:
    keys = sorted({m.spec.key for m in missing})
    if not keys:
        return "no rows"
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    contexts = [c for m in missing if m.spec.context_dependent for c in m.contexts]
    span = f" (contexts {min(contexts)}-{max(contexts)} needed)" if contexts else ""
    return f"it has no rows, or none without extrapolation in width or context, for {shown}{span}"


def plot(result: Frontier, path: Path) -> None:
    """Parameters (or predicted loss) against latency, one line per depth, budgets marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib (pip install matplotlib)") from None
    by_loss = result.score != "params"
    fig, ax = plt.subplots(figsize=(7, 5))
    for d in result.depths:
        pts = [p for p in result.points if p.depth == d and p.latency_s is not None]
        ys = [p.loss if by_loss else p.params / 1e9 for p in pts]
        ax.plot([p.latency_s for p in pts], ys, marker=".", label=f"depth {d}")
    for row in result.budgets:
        ax.axvline(row.budget_s, color="0.6", lw=0.8, ls="--")
    ax.set(
        xscale="log",
        xlabel=f"decode latency (s), batch {result.batch}, {result.generate} tokens "
        f"after {result.prompt}",
        ylabel="predicted loss" if by_loss else "parameters (B)",
        title=f"{result.family} frontier on {result.device_name or 'this LUT'} (budgets dashed)",
    )
    if not by_loss:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def export_models(result: Frontier, family: Family, folder: Path) -> list[Path]:
    """Each budget's chosen model per depth as a latprof YAML config in `folder` (for `latprof
    compare` or `latprof estimate`), named `<family>-d<depth>-w<width>.yaml`."""
    from latprof.config_yaml import model_to_yaml

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--export {folder}: cannot create the folder ({exc.strerror})") from None
    written = []
    chosen = {
        (p.depth, p.width): p
        for row in result.budgets
        for p in row.best_per_depth.values()
        if p is not None
    }
    for (depth, width), p in sorted(chosen.items()):
        model = family.model(depth, width)
        path = folder / f"{model.name}.yaml"
        how = f"{p.latency_s:.4g} s" if p.latency_s is not None else "?"
        text = model_to_yaml(
            model,
            f"frontier pick of {result.family}: depth {depth}, width {width}, "
            f"{p.params / 1e9:.3f} B params, {how} for {result.generate} tokens after "
            f"{result.prompt} at batch {result.batch} ({result.lut})",
        )
        try:
            path.write_text(text)
        except OSError as exc:
            raise InputError(f"--export: cannot write {path} ({exc.strerror})") from None
        written.append(path)
    return written
