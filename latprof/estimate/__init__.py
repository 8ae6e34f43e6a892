"""Whole-model decode latency from a LUT: arithmetic on a table, no torch.

- **Context**: linear between measured contexts.  Decoding T tokens after a prompt of P sums the
  step latency over the contexts P .. P+T-1 exactly (arithmetic series per linear piece).
- **Width**: a spec the LUT lacks is interpolated between the two nearest measured widths of its
  family (same operator, same `spec.overrides()`), linearly in the parameter count.
- Outside the measured range (context or width) is **extrapolation**: flagged, and an error
  unless allowed.  A spec with nothing to interpolate from is an error naming the spec and the
  `latprof sweep` command that measures it.

The modules, in reading order:

- `curve`: `Curve`, a piecewise-linear latency in context, and its exact sum over contexts.
- `lut_selection`: which LUT rows to use (`resolve_settings`: dtype / device / mode, refused on
  a mismatch unless forced) and which backend per operator (`BackendChoice`).
- `latency_table`: `LatencyTable`, the rows indexed as curves per spec, width interpolation.
- `result`: `Estimate`, `LayerEstimate`, and the `MissingSpecs` error.
- `estimator`: `Estimator`, the public API: per-layer estimates and the fast path for search loops.
- `run`: one `latprof estimate` run (`EstimateRequest` -> `Report`, with memory and max batch).
"""

from latprof.estimate.curve import Curve
from latprof.estimate.estimator import Estimator
from latprof.estimate.latency_table import LatencyTable, Lookup
from latprof.estimate.lut_selection import LutSettings, resolve_settings
from latprof.estimate.result import Estimate, LayerEstimate, Missing, MissingSpecs
from latprof.estimate.run import EstimateRequest, Report, run_estimate

__all__ = [
    "Curve",
    "Estimate",
    "EstimateRequest",
    "Estimator",
    "LatencyTable",
    "LayerEstimate",
    "Lookup",
    "LutSettings",
    "Missing",
    "MissingSpecs",
    "Report",
    "resolve_settings",
    "run_estimate",
]
