"""`HFConfig`: a parsed config.json with typed field getters whose errors name the file, the
model_type and the field."""

from __future__ import annotations

from typing import Any

from latprof.errors import InputError
from latprof.inputs import MAX_LAYERS, MAX_SIZE, bounded_float, quote
from latprof.registry import build_spec
from latprof.specs import OpSpec

_REQUIRED = object()
#: fields that count layers: bounded by MAX_LAYERS (a config of 1e9 layers would never load)
LAYER_COUNT_KEYS = frozenset(
    {"num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_mamba_layers"}
)


class HFConfig:
    """A parsed config.json with typed getters whose errors name the file and field.

    Loaders add notes (details latprof does not model) with `note`, and weight ties (a layer
    reusing an earlier layer's shared weights) with `tie`; both end up on the ModelSpec, and so
    does `max_positions` where a loader knows better than max_position_embeddings.
    """

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data, self.source = data, source
        self.model_type = str(data.get("model_type"))
        self.notes: list[str] = []
        self.weight_ties: list[tuple[int, int]] = []
        #: the trained length where the family derives it (Zamba2's use_long_context: 16384)
        self.max_positions: int | None = None

    def error(self, message: str) -> InputError:
        return InputError(f"{self.source} (model_type {self.model_type!r}): {message}")

    def int(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is _REQUIRED:
                raise self.error(f"required field {key!r} is missing")
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(f"{key} must be an integer >= {minimum}, got {quote(value)}")
        ceiling = MAX_LAYERS if key in LAYER_COUNT_KEYS else MAX_SIZE
        if value > ceiling:
            what = "layers" if key in LAYER_COUNT_KEYS else "for any size"
            raise self.error(f"{key} is {quote(value)}, over latprof's limit of {ceiling:,} {what}")
        return value

    def number(self, key: str, maximum: float = 1e6) -> float | None:
        """A finite positive number (a ratio, a scale) or None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        try:
            return bounded_float(value, key, 0.0, maximum)
        except InputError as exc:
            raise self.error(str(exc)) from None

    def opt_int(self, *keys: str) -> int | None:
        """The first of `keys` present with a positive value ("auto", null and values <= 0,
        which several configs use for "derive it", mean absent)."""
        for key in keys:
            value = self.data.get(key)
            if value is None or value == "auto" or (isinstance(value, int) and value <= 0):
                continue
            return self.int(key)
        return None

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        value = self.data.get(key)
        if value is None:
            return list(default or [])
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise self.error(f"{key} must be a list of integers, got {quote(value)}")
        if len(value) > MAX_LAYERS:
            raise self.error(f"{key} has {len(value):,} items, over the limit of {MAX_LAYERS:,}")
        return value

    def str_list(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key} must be a list of strings, got {quote(value)}")
        if len(value) > MAX_LAYERS:
            raise self.error(f"{key} has {len(value):,} items, over the limit of {MAX_LAYERS:,}")
        return value

    def spec(self, op: str, width: int, **params: Any) -> OpSpec:
        try:
            return build_spec(op, width, **params)
        except InputError as exc:
            raise self.error(f"impossible shape: {exc}") from None

    def tie(self, layer: int, owner: int) -> None:
        """Layer `layer` (an index into the loader's layer list) reuses the shared weights of
        the earlier layer `owner` (latprof.model_spec.ModelSpec.weight_ties)."""
        self.weight_ties.append((layer, owner))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
