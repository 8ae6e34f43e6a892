"""`Estimator`: whole-model decode latency from one LUT, by summing per-layer latency curves.

Per decode step at context c, the latency is the sum over layers of the LUT latency of the
layer's spec (`LatencyTable.lookup`), plus the embedding and the LM head.  Attention rows are
looked up at c + the model's meta tokens; context-independent operators at `ANY_CONTEXT`.
Decoding T tokens after a prompt of P sums the step latency over the contexts P .. P+T-1 exactly
(`Curve.sum_range`).  Outside the measured range is extrapolation: flagged, and an error unless
allowed.

Search loops: build one `Estimator` per LUT (it indexes the rows once) and call
`decode_latency_us(model, ...)` for each candidate; per-spec results are cached, so a model costs a
few dictionary look-ups per distinct layer (see benchmarks/bench_estimate.py).
"""

from __future__ import annotations

from pathlib import Path

from latprof.errors import InputError
from latprof.estimate.latency_table import LatencyTable, Lookup
from latprof.estimate.result import Estimate, LayerEstimate, Missing, MissingSpecs
from latprof.grid import Point, dedupe, points_for
from latprof.lut import ANY_CONTEXT, LUT
from latprof.model_spec import ModelSpec
from latprof.registry import build_spec
from latprof.settings import BackendRequest, Settings
from latprof.specs import OpSpec


class Estimator:
    """One LUT, indexed for estimates at one dtype / device / mode.

    `backend`: None (each operator's only backend in the LUT), a name for every operator that has
    it, or {op: name}; an operator with several backends in the LUT and none chosen is an error.
    """

    def __init__(
        self,
        lut: LUT | str | Path,
        *,
        dtype: str | None = None,
        device: str | None = "auto",
        mode: str | None = None,
        backend: str | dict[str, str] | BackendRequest | None = None,
        allow_extrapolation: bool = False,
        force: bool = False,
    ) -> None:
        self.table = LatencyTable(
            lut, dtype=dtype, device=device, mode=mode, backend=backend, force=force
        )
        self.lut, self.settings = self.table.lut, self.table.settings
        self.batches, self.bandwidth_gbps = self.table.batches, self.table.bandwidth_gbps
        self.allow_extrapolation, self.force = allow_extrapolation, force
        self._sums: dict[tuple, float] = {}
        self._io: dict[tuple[int, int], tuple[OpSpec, OpSpec]] = {}

    @classmethod
    def for_settings(
        cls,
        lut: LUT | str | Path,
        settings: Settings,
        *,
        allow_extrapolation: bool = False,
        force: bool = False,
    ) -> Estimator:
        """The Estimator of a command's resolved settings (`Settings.resolve(measure=False)`):
        what they leave out is the LUT's."""
        return cls(
            lut,
            dtype=settings.dtype,
            device=settings.device or "auto",
            mode=settings.mode,
            backend=settings.backends,
            allow_extrapolation=allow_extrapolation,
            force=force,
        )

    @property
    def notes(self) -> list[str]:
        """What `force` overrode (settings, backends)."""
        return self.table.notes

    def backend_for(self, op: str) -> str | None:
        """The backend whose rows are used for `op`; None if the LUT has no rows for it."""
        return self.table.backend_for(op)

    def lookup(self, spec: OpSpec, phase: str, batch: int) -> Lookup | None:
        """The LUT's latency curve for `spec`, measured or interpolated in width; None if the
        LUT has nothing to answer with."""
        return self.table.lookup(spec, phase, batch)

    # ---- estimating ----------------------------------------------------------------------------
    def _io_specs(self, model: ModelSpec) -> tuple[OpSpec, OpSpec]:
        key = (model.width, model.vocab_size)
        if key not in self._io:
            self._io[key] = (
                build_spec("embedding", model.width, vocab_size=model.vocab_size),
                build_spec("lm_head", model.width, vocab_size=model.vocab_size),
            )
        return self._io[key]

    def estimate(
        self, model: ModelSpec, batch: int = 1, prompt: int = 0, generate: int = 1
    ) -> Estimate:
        """Per-layer and whole-model decode latency of `generate` tokens after `prompt`."""
        check_query(batch, prompt, generate)
        a, b = prompt, prompt + generate - 1
        embedding, lm_head = self._io_specs(model)
        entries = [(embedding, ()), *((s, tuple(p)) for s, p in model.groups()), (lm_head, ())]
        dtype = self.settings.dtype_name
        rows, missing, extrapolated = [], [], []
        beyond: list[Missing] = []  # specs the LUT answers only by extrapolation
        for spec, positions in entries:
            shift = model.meta_tokens if spec.context_dependent else 0
            lookup = self.lookup(spec, "decode", batch)
            if lookup is None:
                contexts = (a + shift, b + shift) if spec.context_dependent else (ANY_CONTEXT,)
                missing.append(Missing(spec, "decode", batch, self.backend_for(spec.op), contexts))
                continue
            curve = lookup.curve
            extra = lookup.extrapolation(spec.width, a + shift, b + shift)
            if extra:
                extrapolated.append(f"{spec.key}: {extra}")
                contexts = (a + shift, b + shift) if spec.context_dependent else (ANY_CONTEXT,)
                beyond.append(Missing(spec, "decode", batch, lookup.backend, contexts))
            context_interp = not curve.constant and not (a == b and curve.measured_at(a + shift))
            how = "+".join(
                w
                for w, on in (("width", lookup.method != "measured"), ("context", context_interp))
                if on
            )
            floor = None
            if self.bandwidth_gbps:
                floor = spec.bytes_per_step(batch, b + shift, dtype) / (self.bandwidth_gbps * 1e3)
            rows.append(
                LayerEstimate(
                    spec,
                    max(1, len(positions)),
                    positions,
                    lookup.backend,
                    curve.at(a + shift),
                    curve.at(b + shift),
                    curve.sum_range(a + shift, b + shift),
                    floor,
                    how or "measured",
                    extra,
                )
            )
        if missing:
            raise MissingSpecs.for_model(model, missing, self.settings, self.lut.path)
        if extrapolated and not self.allow_extrapolation:
            # a MissingSpecs, so that --measure-missing measures these specs exactly
            raise MissingSpecs(
                f"model {model.name!r} needs LUT values outside what was measured: "
                + "; ".join(extrapolated)
                + ". Measure the missing range with `latprof sweep` (wider --context or --widths),"
                " pass --measure-missing to measure these specs now, or --allow-extrapolation to"
                " accept a linear extrapolation (flagged).",
                beyond,
            )
        floors = [r.roofline_us_last for r in rows]
        prefill_us, prefill_note = self._prefill(model, entries, batch, prompt)
        return Estimate(
            model,
            batch,
            prompt,
            generate,
            tuple(rows),
            step_us_first=sum(r.count * r.latency_us_first for r in rows),
            step_us_last=sum(r.count * r.latency_us_last for r in rows),
            decode_us=sum(r.count * r.latency_us_sum for r in rows),
            roofline_step_us_last=None
            if None in floors
            else sum(r.count * r.roofline_us_last for r in rows),
            prefill_us=prefill_us,
            prefill_note=prefill_note,
        )

    def _prefill(self, model, entries, batch: int, prompt: int) -> tuple[float | None, str | None]:
        """Prefill of the prompt (plus meta tokens) from phase=prefill rows, where present."""
        if prompt == 0:
            return None, "no prompt"
        if batch not in self.batches.get("prefill", ()):
            return None, f"the LUT has no prefill rows at batch {batch}"
        n = prompt + model.meta_tokens
        total, missing, outside, interpolated = 0.0, [], [], False
        for spec, positions in entries:
            lookup = self.lookup(spec, "prefill", batch)
            if lookup is None:
                missing.append(spec.key)
                continue
            if lookup.extrapolation(spec.width, n, n):
                outside.append(spec.key)
            interpolated |= lookup.method != "measured" or not lookup.curve.measured_at(n)
            total += max(1, len(positions)) * lookup.curve.at(n)
        if missing:
            return None, f"no prefill rows for: {', '.join(missing)}"
        if outside and not self.allow_extrapolation:
            return None, (
                f"prompt length {n} outside the measured prefill range of: "
                f"{', '.join(outside)} (--allow-extrapolation)"
            )
        note = "extrapolated" if outside else ("interpolated" if interpolated else None)
        return total, note

    # ---- fast path for search loops --------------------------------------------------------------
    def _spec_sum(self, model: ModelSpec, spec: OpSpec, batch: int, a: int, b: int):
        """Latency of `spec` summed over contexts a..b; None where the LUT cannot answer
        (missing, or extrapolation not allowed)."""
        shift = model.meta_tokens if spec.context_dependent else 0
        key = (spec, batch, a + shift, b + shift)
        value = self._sums.get(key)
        if value is None:
            lookup = self.lookup(spec, "decode", batch)
            if lookup is None:
                return None
            if not self.allow_extrapolation and lookup.extrapolation(
                spec.width, a + shift, b + shift
            ):
                return None
            value = self._sums[key] = lookup.curve.sum_range(a + shift, b + shift)
        return value

    def decode_latency_us(
        self, model: ModelSpec, batch: int = 1, prompt: int = 0, generate: int = 1
    ) -> float:
        """Total decode latency (µs) of `generate` tokens after `prompt`: the fast path of
        `estimate`, same numbers, no per-layer breakdown.  Raises what `estimate` raises."""
        check_query(batch, prompt, generate)
        a, b = prompt, prompt + generate - 1
        embedding, lm_head = self._io_specs(model)
        parts = [
            self._spec_sum(model, embedding, batch, a, b),
            self._spec_sum(model, lm_head, batch, a, b),
        ]
        total = 0.0
        for spec, n in model.counts.items():
            value = self._spec_sum(model, spec, batch, a, b)
            if value is None:
                break
            total += n * value
        else:
            if None not in parts:
                return total + parts[0] + parts[1]
        return self.estimate(model, batch, prompt, generate).decode_us  # raises the full error

    def step_latency_us(self, model: ModelSpec, batch: int = 1, context: int = 0) -> float:
        """One decode step at `context` tokens in the cache."""
        return self.decode_latency_us(model, batch, context, 1)

    def throughput_at(
        self, model: ModelSpec, batch: int, prompt: int, generate: int
    ) -> tuple[float | None, str]:
        """Decode tokens/s at `batch`, interpolating the decode latency linearly in batch between
        the nearest measured batches (flagged); (None, why) where it cannot."""
        measured = sorted(self.batches.get("decode", ()))
        if batch in measured:
            pair, how = (batch, batch), f"measured batch {batch}"
        else:
            below, above = [b for b in measured if b < batch], [b for b in measured if b > batch]
            if below and above:
                pair, how = (below[-1], above[0]), "interpolated in batch"
            elif len(below) >= 2 and self.allow_extrapolation:
                pair, how = (below[-2], below[-1]), "extrapolated in batch"
            else:
                return None, (
                    f"batch {batch} is outside the LUT's batches "
                    f"{', '.join(map(str, measured))} (--allow-extrapolation)"
                )
        try:
            lat = [self.decode_latency_us(model, b, prompt, generate) for b in pair]
        except InputError as exc:
            return None, str(exc)
        if pair[0] == pair[1]:
            decode_us = lat[0]
        else:
            t = (batch - pair[0]) / (pair[1] - pair[0])
            decode_us = lat[0] + t * (lat[1] - lat[0])
            how += f" between {pair[0]} and {pair[1]}"
        return batch * generate / (decode_us * 1e-6), how

    def missing_points(self, missing: list[Missing]) -> list[Point]:
        """Grid points measuring what `missing` lacks: its contexts plus the LUT's contexts in
        between (for context-dependent operators), at this estimator's dtype / device / mode."""
        s = self.settings
        points: list[Point] = []
        for m in missing:
            if m.backend is None:
                raise InputError(
                    f"--measure-missing: the LUT has no {m.spec.op} rows, so its backend is "
                    f"unknown; name it with --backend {m.spec.op}=NAME"
                )
            contexts = set(m.contexts)
            if m.spec.context_dependent:
                known = self.table.contexts(m.phase)
                contexts |= {c for c in known if min(m.contexts) < c < max(m.contexts)}
            points += points_for(
                m.spec,
                phase=m.phase,
                batches=(m.batch,),
                contexts=sorted(contexts),
                dtype=s.dtype,
                device=s.device,
                backend=m.backend,
                mode=s.mode,
            )
        return dedupe(points)


def check_query(batch: int, prompt: int, generate: int) -> None:
    """Refuse a batch < 1, a prompt < 0 or a generate < 1 (and non-integers) with InputError."""
    for name, value, low in (("batch", batch, 1), ("prompt", prompt, 0), ("generate", generate, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
