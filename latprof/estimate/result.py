"""What an estimate returns (`Estimate`, one `LayerEstimate` per distinct spec) or raises
(`MissingSpecs`, naming the `latprof sweep` commands that would measure what is missing)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.estimate.lut_selection import LutSettings
from latprof.model_spec import ModelSpec
from latprof.specs import OpSpec


# ---- errors --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Missing:
    spec: OpSpec
    phase: str
    batch: int
    backend: str | None
    contexts: tuple[int, ...]  # contexts the estimate needs (ANY_CONTEXT for constant ops)


class MissingSpecs(InputError):
    """Specs the LUT cannot answer for; the message holds the sweep command(s) that would."""

    def __init__(self, message: str, missing: list[Missing]) -> None:
        super().__init__(message)
        self.missing = missing

    @classmethod
    def for_model(
        cls, model: ModelSpec, missing: list[Missing], settings: LutSettings, lut_path: Path
    ) -> MissingSpecs:
        """The error for `missing` specs of `model`, with one sweep command per backend that
        measures them into `lut_path` at the LUT's `settings`."""
        s = settings
        listed = "; ".join(f"{m.spec.key} [{m.phase}, backend {m.backend or '?'}]" for m in missing)
        by_backend: dict[str | None, list[Missing]] = defaultdict(list)
        for m in missing:
            by_backend[m.backend].append(m)
        commands = []
        for backend, group in by_backend.items():
            # context-independent operators are measured once, whatever --context says
            contexts = sorted(
                {max(c, 1) for m in group if m.spec.context_dependent for c in m.contexts}
            )
            specs = " ".join(f"--op-spec '{m.spec.key}'" for m in group)
            context_flag = f"--context {','.join(map(str, contexts))} " if contexts else ""
            commands.append(
                f"latprof sweep {specs} --batch {group[0].batch} {context_flag}"
                f"--dtype {s.dtype} --device {s.device} "
                f"--backend {backend or 'BACKEND'} --mode {s.mode} --out {lut_path}"
            )
        hint = ""
        unknown = sorted({m.spec.op for m in missing if m.backend is None})
        if unknown:
            hint = f" (BACKEND: the LUT has no rows for {', '.join(unknown)}, so name its backend)"
        return cls(
            f"{lut_path} has no {missing[0].phase} rows at batch {missing[0].batch} "
            f"({s.dtype}, {s.device}, {s.mode}) for {len(missing)} operator spec(s) of model "
            f"{model.name!r}, and none to interpolate from: {listed}. Measure them with: "
            + " ; ".join(commands)
            + hint
            + " — or rerun with --measure-missing.",
            missing,
        )


# ---- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerEstimate:
    """One distinct spec of the model (count layers of it), per layer at one batch."""

    spec: OpSpec
    count: int
    positions: tuple[int, ...]  # layer indices; () for embedding and LM head
    backend: str
    latency_us_first: float  # one step at the first context
    latency_us_last: float  # one step at the last context
    latency_us_sum: float  # summed over all decode steps
    roofline_us_last: float | None  # bytes_per_step / bandwidth at the last context
    interpolation: str  # measured | context | width | width+context
    extrapolated: str | None  # why, if outside the measured range

    def as_json(self, step_us_last: float) -> dict[str, Any]:
        return {
            "op": self.spec.op,
            "spec": self.spec.key,
            "count": self.count,
            "positions": list(self.positions),
            "backend": self.backend,
            "latency_us_first": self.latency_us_first,
            "latency_us_last": self.latency_us_last,
            "share_of_step": self.count * self.latency_us_last / step_us_last,
            "roofline_us_last": self.roofline_us_last,
            "interpolation": self.interpolation,
            "extrapolated": self.extrapolated,
        }


@dataclass(frozen=True)
class Estimate:
    """Decode latency of `model`: `generate` tokens after `prompt`, at `batch` (µs)."""

    model: ModelSpec
    batch: int
    prompt: int
    generate: int
    layers: tuple[LayerEstimate, ...]
    step_us_first: float
    step_us_last: float
    decode_us: float
    roofline_step_us_last: float | None
    prefill_us: float | None
    prefill_note: str | None

    @property
    def first_context(self) -> int:
        return self.prompt

    @property
    def last_context(self) -> int:
        return self.prompt + self.generate - 1

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.generate / (self.decode_us * 1e-6)

    @property
    def interpolated(self) -> list[str]:
        return [r.spec.key for r in self.layers if r.interpolation != "measured"]

    @property
    def extrapolated(self) -> list[str]:
        return [r.spec.key for r in self.layers if r.extrapolated]

    def totals_json(self) -> dict[str, Any]:
        return {
            "step_us_first": self.step_us_first,
            "step_us_last": self.step_us_last,
            "decode_us": self.decode_us,
            "tokens_per_s": self.tokens_per_s,
            "roofline_step_us_last": self.roofline_step_us_last,
            "prefill_us": self.prefill_us,
            "prefill_note": self.prefill_note,
        }
